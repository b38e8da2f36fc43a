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
