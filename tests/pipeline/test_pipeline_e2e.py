"""The whole pipeline on LocalDagRunner with SQLite ML Metadata, as `lcron run` runs it.

One module-scoped scenario over a tiny simulated log, in the order a user meets it:
1. a run is killed mid-way (SIGKILL while the Trainer runs): nothing is served;
2. the re-run completes: every component ran, eval artifacts exist, the pair is pushed with its
   manifest, models.config and warmup requests;
3. a deliberately degraded model (1 training step) is not blessed and not pushed: the serving
   dir still holds the good pair;
4. re-running the good configuration is served from TFX's cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

LCRON = str(Path(sys.executable).parent / "lcron")
TINY = [
    "data.simulate_days=3",
    "data.simulate_requests_per_day=300",
    "data.simulate_corrupt_fraction=0.005",  # under the 1% of malformed rows that fails a run
    "trainer.train_steps=150",
    "trainer.batch_size=64",
    "evaluation.recall_floor=0.3",
    "evaluation.max_regression=0.02",
]
COMPONENTS = (
    "RecFlowExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "CascadeEvaluator",
    "CascadePusher",
)


def _args(out: Path, extra: list[str] = ()) -> list[str]:
    overrides = []
    for item in [*TINY, *extra]:
        key, value = item.split("=", 1)
        if key.startswith("trainer."):
            key = "training." + key
        overrides += ["--set", f"{key}={value}"]
    return ["run", "--out", str(out), "--json", *overrides]


def _run(out: Path, extra: list[str] = (), timeout: float = 900) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [LCRON, *_args(out, extra)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _executions(out: Path) -> dict[str, list[str]]:
    """Component id -> states of its executions, read from the run's ML Metadata."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(out / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    by_node: dict[str, list[str]] = {}
    # LocalDagRunner puts every execution in a "node" context named "<pipeline>.<node id>".
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[-1]
        for execution in store.get_executions_by_context(context.id):
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            by_node.setdefault(node, []).append(state)
    return by_node


def _serving_state(serving: Path) -> dict:
    manifest = serving / "manifest.json"
    return {
        "manifest": json.loads(manifest.read_text()) if manifest.exists() else None,
        "retrieval": sorted(p.name for p in (serving / "retrieval").glob("*")),
        "ranking": sorted(p.name for p in (serving / "ranking").glob("*")),
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("lcron_run")
    serving = out / "serving"
    result: dict = {"out": out, "serving": serving}

    # 1. Kill a run while the Trainer runs.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [LCRON, *_args(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    trainer_dir = out / "pipeline_root" / "Trainer"
    while not trainer_dir.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    result["killed_before_exit"] = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    result["after_kill"] = _serving_state(serving)

    # 2. Re-run: completes.
    result["good"] = _run(out)
    result["after_good"] = _serving_state(serving)
    result["executions_good"] = _executions(out)

    # 3. A degraded model after the good one.
    result["degraded"] = _run(out, ["trainer.train_steps=1"])
    result["after_degraded"] = _serving_state(serving)

    # 4. The good configuration again: cached.
    started = time.monotonic()
    result["cached"] = _run(out)
    result["cached_wall_s"] = time.monotonic() - started
    result["executions_all"] = _executions(out)
    return result


def test_killed_run_serves_nothing_half_written(scenario: dict) -> None:
    assert scenario["killed_before_exit"], "the run finished before it could be killed"
    state = scenario["after_kill"]
    assert state["manifest"] is None
    assert state["retrieval"] == [] and state["ranking"] == []


def test_rerun_completes_and_pushes_the_pair(scenario: dict) -> None:
    good = scenario["good"]
    executions = scenario["executions_good"]
    for component in COMPONENTS:
        assert "COMPLETE" in executions.get(component, []) or "CACHED" in executions.get(
            component, []
        ), (component, executions.get(component))
    assert good["blessed"] is True, good["reason"]
    evaluation = good["evaluation"]
    assert evaluation["requests"] > 0
    recall, chance = evaluation["overall"]["end_to_end_recall"], evaluation["chance"]
    # Chance level: keep 30 then 20 of a list of 40 (a few lists are shorter).
    assert 0.5 <= chance["end_to_end_recall"] < 0.6
    assert chance["end_to_end_recall"] + 0.1 <= recall <= 1.0
    assert evaluation["slices"], "evaluation is sliced by a context feature"

    state = scenario["after_good"]
    version = str(state["manifest"]["version"])
    assert state["retrieval"] == [version] and state["ranking"] == [version]
    serving = scenario["serving"]
    for stage in ("retrieval", "ranking"):
        model_dir = serving / stage / version
        assert (model_dir / "saved_model.pb").exists()
        assert (model_dir / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    models_config = (serving / "models.config").read_text()
    assert "retrieval" in models_config and "ranking" in models_config
    assert version in models_config
    assert good["ingestion"]["rows_dead_lettered"] > 0


def test_degraded_model_is_not_blessed_nor_pushed(scenario: dict) -> None:
    degraded = scenario["degraded"]
    assert degraded["blessed"] is False
    assert any(why in degraded["reason"] for why in ("regress", "floor", "chance")), degraded
    assert scenario["after_degraded"] == scenario["after_good"]


def test_rerun_uses_the_cache(scenario: dict) -> None:
    states = scenario["executions_all"]
    # The third run of the good configuration reuses every result of the second.
    for component in ("RecFlowExampleGen", "Transform", "Trainer"):
        assert states[component].count("CACHED") >= 1, (component, states[component])
    assert scenario["after_degraded"] == _serving_state(scenario["serving"])
