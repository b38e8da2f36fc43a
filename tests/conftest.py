"""Shared pytest setup: quiet TensorFlow, and the simulated-log -> Transform -> trained cascade
fixtures that the model, serving and pipeline tests share (built once per session).

Conftest modules are not importable under ``--import-mode=importlib``: tests get these through
fixtures.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest

# Set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
# A small simulated log: days 0-1 train, day 2 eval.
LOG_DAYS, LOG_REQUESTS, LOG_SEED = 3, 250, 11


def _only(pattern: str) -> str:
    found = glob.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="session")
def transformed_log(tmp_path_factory) -> dict[str, str]:
    """The real RecFlowExampleGen, ImportSchemaGen and Transform on LocalDagRunner (SQLite MLMD)
    over a simulated log. Returns the artifact folders: ``examples`` (raw list-wise),
    ``transformed_examples``, ``transform_graph`` and the ``logs`` folder."""
    from tfx import v1 as tfx

    from components.recflow_example_gen import RecFlowExampleGen, day_splits
    from models.code_version import code_version
    from simulator import SimulatorConfig, simulate

    tmp = tmp_path_factory.mktemp("transformed_log")
    simulate(
        SimulatorConfig(), tmp / "logs", days=LOG_DAYS, requests_per_day=LOG_REQUESTS, seed=LOG_SEED
    )
    example_gen = RecFlowExampleGen(
        input_base=str(tmp / "logs"), input_config=day_splits([0, 1], [2])
    ).with_id("RecFlowExampleGen")
    schema = tfx.components.ImportSchemaGen(
        schema_file=str(ROOT / "data" / "schema.pbtxt")
    ).with_id("ImportSchemaGen")
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_version": code_version()},
    ).with_id("Transform")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="transformed-log",
        pipeline_root=str(tmp / "root"),
        components=[example_gen, schema, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp / "metadata.sqlite")
        ),
        enable_cache=False,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    root = tmp / "root"
    return {
        "logs": str(tmp / "logs"),
        "examples": _only(f"{root}/RecFlowExampleGen/examples/*"),
        "transformed_examples": _only(f"{root}/Transform/transformed_examples/*"),
        "transform_graph": _only(f"{root}/Transform/transform_graph/*"),
    }


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
    """``train_cascade(steps=300, seed=0, method="lcron", **trainer)`` -> ``TrainedCascade``
    (in-memory model, history, export dirs); each distinct configuration trains once."""
    from models import trainer

    cache: dict[tuple, Any] = {}

    def train(steps: int = 300, seed: int = 0, method: str = "lcron", **extra: Any):
        key = (steps, seed, method, tuple(sorted(extra.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"cascade_{method}_{steps}_{seed}")
            config = {
                "loss": {"method": method},
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
