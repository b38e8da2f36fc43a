"""Shared pytest setup: quiet TensorFlow, and the simulated-log -> Transform -> trained cascade
fixtures that the model, serving and pipeline tests share (built once per session).

Conftest modules are not importable under ``--import-mode=importlib``: tests get these through
fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first: those with pipeline runs, then those with other slow tests, then
    the rest (stable within each; a file's tests stay together, so module fixtures are built
    once). ``make test`` hands whole files to two workers in this order (xdist ``loadfile``),
    so the minutes-long files start first and the short ones fill in around them instead of one
    worker finishing a pipeline run alone at the end."""

    def weight(item: pytest.Item) -> int:
        if item.get_closest_marker("pipeline"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    by_file: dict[str, int] = {}
    for item in items:
        path = str(item.path)
        by_file[path] = min(by_file.get(path, 2), weight(item))
    items.sort(key=lambda item: by_file[str(item.path)])


# A small simulated log: days 0-1 train, day 2 eval.
LOG_DAYS, LOG_REQUESTS, LOG_SEED = 3, 250, 11


@pytest.fixture(scope="session")
def transformed_log(tmp_path_factory) -> dict[str, str]:
    """The real RecFlowExampleGen, ImportSchemaGen and Transform on LocalDagRunner (SQLite MLMD)
    over a simulated log. Returns the artifact folders: ``examples`` (raw list-wise),
    ``transformed_examples``, ``transform_graph`` and the ``logs`` folder."""
    from pipeline.ingest_and_transform import ingest_and_transform
    from simulator import SimulatorConfig, simulate

    tmp = tmp_path_factory.mktemp("transformed_log")
    simulate(
        SimulatorConfig(), tmp / "logs", days=LOG_DAYS, requests_per_day=LOG_REQUESTS, seed=LOG_SEED
    )
    artifacts = ingest_and_transform(tmp / "logs", tmp / "pipeline", [0, 1], [2])
    return {"logs": str(tmp / "logs"), **artifacts}


def fn_args(transformed: dict[str, str], out: Path, custom_config: dict[str, Any]):
    """Real TFX ``FnArgs`` for ``models.trainer.run_fn`` over the transformed log."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    examples = transformed["transformed_examples"]
    return FnArgs(
        train_files=[f"{examples}/Split-train/*"],
        eval_files=[f"{examples}/Split-eval/*"],
        transform_output=transformed["transform_graph"],
        serving_model_dir=str(out / "Format-Serving"),
        model_run_dir=str(out / "model_run"),
        custom_config=custom_config,
    )


@pytest.fixture(scope="session")
def train_cascade(transformed_log, tmp_path_factory):
    """``train_cascade(steps=300, seed=0, method="lcron", loss=None, **trainer)`` ->
    ``TrainedCascade`` (in-memory model, history, export dirs); ``loss`` holds further
    ``LossConfig`` fields; each distinct configuration trains once."""
    from models import trainer

    cache: dict[tuple, Any] = {}

    def train(
        steps: int = 300,
        seed: int = 0,
        method: str = "lcron",
        loss: dict[str, Any] | None = None,
        **extra: Any,
    ):
        loss = dict(loss or {})
        key = (steps, seed, method, tuple(sorted(loss.items())), tuple(sorted(extra.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"cascade_{method}_{steps}_{seed}")
            config = {
                "loss": {"method": method, **loss},
                "trainer": {
                    "train_steps": steps,
                    "steps_per_epoch": min(50, steps),
                    "batch_size": 64,
                    "seed": seed,
                    **extra,
                },
            }
            cache[key] = trainer.train_and_export(fn_args(transformed_log, out, config))
        return cache[key]

    return train


# --- A RecFlow download, in RecFlow's own layout and units -----------------------------------

RECFLOW_FIRST_DATE = (2024, 1, 13)  # RecFlow's first day
RECFLOW_STAGES = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg")


def recflow_date(day: int) -> str:
    import datetime

    return (datetime.date(*RECFLOW_FIRST_DATE) + datetime.timedelta(days=day)).isoformat()


def build_recflow_download(out: Path, days: int, requests_per_day: int, seed: int) -> Path:
    """Writes a tiny RecFlow download under ``out`` from a simulated log (so it has signal):

    - ``all_stage/DATE.feather``: our LOG_COLUMNS without the sequences, in RecFlow's units
      (request_timestamp ms, upload_timestamp s, duration and playing_time ms) and with null
      rank_index / rerank_index where the item has no position;
    - ``seq_effective_50_dict/DATE.pkl``: request_id -> int64 [50, 10], oldest view first,
      valid rows right-aligned, column 7 the view's request timestamp (> 0 when valid), columns
      0, 1, 2 video_id, author_id, category_level_two (the others filled with other ints);
    - ``request_id_dict/DATE.pkl``: request_id -> {stage flag: int64 [n, 8] rows of its videos
      (video, author, category 1, category 2, upload type, upload time s, duration ms,
      rank_index)}, which we do not read.

    Returns ``out``.
    """
    import pickle

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.feather as feather

    from models import features
    from simulator import SimulatorConfig, simulate

    logs = out.parent / f"{out.name}_simulated"
    simulate(SimulatorConfig(), logs, days=days, requests_per_day=requests_per_day, seed=seed)
    seq_columns = list(features.SEQUENCE_FEATURES)
    for day in range(days):
        date = recflow_date(day)
        frame = pd.read_parquet(logs / f"day_{day:02d}")
        rows = frame.drop(columns=seq_columns).copy()
        rows["upload_timestamp"] = rows["upload_timestamp"] // 1000
        rows["duration"] = rows["duration"] * 1000
        rows["playing_time"] = rows["playing_time"] * 1000.0
        for name in ("rank_index", "rerank_index"):
            rows[name] = rows[name].astype("Int64").mask(rows[name] < 0)
        (out / "all_stage").mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        feather.write_feather(table, str(out / "all_stage" / f"{date}.feather"))

        sequences, candidates = {}, {}
        for request_id, group in frame.groupby("request_id", sort=True):
            first = group.iloc[0]
            recent = list(zip(*(first[c] for c in seq_columns), strict=True))  # recent first
            array = np.zeros((50, 10), np.int64)
            for back, (video, author, category) in enumerate(recent[:50]):
                row = 49 - back  # oldest first, right-aligned
                viewed_at = int(first["request_timestamp"]) - 60_000 * (back + 1)
                array[row] = [video, author, category, 7, 1, 30, 0, viewed_at, 1, 0]
            sequences[int(request_id)] = array
            candidates[int(request_id)] = {
                stage: group.loc[group[stage] == 1]
                .assign(
                    upload_s=lambda g: g["upload_timestamp"] // 1000,
                    duration_ms=lambda g: g["duration"] * 1000,
                )[
                    [
                        "video_id",
                        "author_id",
                        "category_level_one",
                        "category_level_two",
                        "upload_type",
                        "upload_s",
                        "duration_ms",
                        "rank_index",
                    ]
                ]
                .to_numpy(np.int64)
                for stage in (*RECFLOW_STAGES, "prerank_neg")
            }
        for folder, payload in (
            ("seq_effective_50_dict", sequences),
            ("request_id_dict", candidates),
        ):
            (out / folder).mkdir(parents=True, exist_ok=True)
            with open(out / folder / f"{date}.pkl", "wb") as f:
                pickle.dump(payload, f, protocol=4)
    return out


@pytest.fixture(scope="session")
def recflow_download(tmp_path_factory) -> Path:
    """A RecFlow-layout folder of 4 days x 200 requests (``build_recflow_download``)."""
    return build_recflow_download(
        tmp_path_factory.mktemp("recflow") / "recflow", days=4, requests_per_day=200, seed=5
    )
