"""The Airflow DAG: light to parse (no TFX at parse time), the same graph as ``create_pipeline``,
and one daily run for real with ``airflow dags test`` (SQLite, no scheduler daemon).

The Airflow tests run in the optional extra's venv (``.venv-airflow``, built by ``make test``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from pipeline.graph import task_graph
from pipeline.schedule import day_numbers, newest_day_splits

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
DAG_ID = "lcron-cascade"
# Airflow's default [core] dagbag_import_timeout: a DAG file slower than this fails to import.
DAGBAG_IMPORT_TIMEOUT_S = 30.0

LOAD_DAG = """
import json, sys, time
started = time.monotonic()
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
# bag.dags, not get_dag(): get_dag() also reads the metadata DB, which parsing does not need.
dag = bag.dags.get(sys.argv[2])
print(json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "parse_s": sum(s.duration.total_seconds() for s in bag.dagbag_stats),
    "process_s": time.monotonic() - started,
    "heavy_modules": sorted(m for m in ("tfx", "tensorflow", "apache_beam") if m in sys.modules),
    "schedule": str(dag.schedule_interval) if dag else None,
    "catchup": dag.catchup if dag else None,
    "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else {},
}))
"""


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_newest_day_is_evaluated(tmp_path: Path) -> None:
    for day in (0, 1, 2, 3, 11):
        _touch(tmp_path / f"day_{day:02d}" / "part-00000.parquet")
    (tmp_path / "day_12").mkdir()  # no file yet: not a day of logs
    _touch(tmp_path / "day_13" / "_SUCCESS")  # a marker alone is no data either
    (tmp_path / "manifest.json").write_text("{}")
    days = day_numbers(tmp_path)
    assert days == [0, 1, 2, 3, 11]
    assert newest_day_splits(days, window=9) == ([2, 3], [11])
    with pytest.raises(ValueError, match="no day of logs within 7 days"):
        newest_day_splits(days, window=7)
    assert newest_day_splits([0, 1, 2], window=7) == ([0, 1], [2])
    with pytest.raises(ValueError, match="two days of logs"):
        newest_day_splits([5], window=7)


def test_days_follow_the_day_pattern(tmp_path: Path) -> None:
    # A RecFlow download: one feather file per date, days numbered by the date's day.
    for name in ("2024-01-09.feather", "2024-01-10.feather", "2024-01-20.feather"):
        _touch(tmp_path / "all_stage" / name)
    _touch(tmp_path / "all_stage" / "2024-02-21.feather")  # another month: not the pattern
    _touch(tmp_path / "all_stage" / "2024-01-22.feather.crc")  # not a full match
    assert day_numbers(tmp_path, "all_stage/2024-01-{day:02d}.feather") == [9, 10, 20]
    assert day_numbers(tmp_path) == []  # no day_NN/ folder in this layout
    with pytest.raises(ValueError, match="no \\{day\\} field"):
        day_numbers(tmp_path, "all_stage/*.feather")


@pytest.mark.slow  # imports TFX and the whole pipeline (~16 s on an idle machine)
@pytest.mark.parametrize(("warm_start", "stop"), [(False, True), (True, True), (False, False)])
def test_task_graph_is_create_pipelines_graph(warm_start: bool, stop: bool, tmp_path: Path) -> None:
    from pipeline import local_runner
    from pipeline.config import load_config

    config = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            f"training.warm_start={json.dumps(warm_start)}",
            f"data.stop_on_anomalies={json.dumps(stop)}",
        ],
    )
    tfx_pipeline = local_runner.build(config, str(tmp_path / "logs"))
    built = {c.id: tuple(sorted(u.id for u in c.upstream_nodes)) for c in tfx_pipeline.components}
    table = task_graph(warm_start=warm_start, stop_on_anomalies=stop)
    assert table == built
    assert list(table) == [c.id for c in tfx_pipeline.components]  # a topological order
    assert ("LatestBlessedModelResolver" in table["Trainer"]) is warm_start
    assert ("ExampleValidator" in table["Transform"]) is stop


def _airflow_env(tmp_path: Path, dags: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        # As on our machines and in a fresh clone: no .pyc cache to speed up the parse.
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def _dag_folder(tmp_path: Path, config: dict) -> Path:
    """A DAG folder as an operator deploys it: the DAG file and its configs/airflow.json."""
    if not (AIRFLOW_BIN / "python").exists():
        pytest.fail("the Airflow extra is missing: `make airflow-venv` (make test builds it)")
    dags = tmp_path / "dags"
    (dags / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "pipeline" / "airflow_dag.py", dags / "airflow_dag.py")
    (dags / "configs" / "airflow.json").write_text(json.dumps(config))
    return dags


def _shipped_config(tmp_path: Path, input_base: Path) -> dict:
    """The shipped configuration (continuous training: warm start), with this test's paths."""
    config = json.loads((ROOT / "pipeline" / "configs" / "airflow.json").read_text())
    config["output_dir"] = str(tmp_path / "out")
    config["data"]["input_base"] = str(input_base)
    return config


@pytest.mark.slow
def test_dag_file_parses_within_airflows_timeout_without_tfx(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for day in range(4):
        _touch(logs / f"day_{day:02d}" / "part-00000.parquet")
    config = _shipped_config(tmp_path, logs)
    dags = _dag_folder(tmp_path, config)
    proc = subprocess.run(
        [str(AIRFLOW_BIN / "python"), "-c", LOAD_DAG, str(dags), DAG_ID],
        capture_output=True,
        text=True,
        env=_airflow_env(tmp_path, dags),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["import_errors"] == {}
    assert loaded["dag_ids"] == [DAG_ID]
    # The DAG file itself (Airflow's own import is not part of its budget) parses well within
    # the timeout, and nothing heavy is imported at parse time.
    assert loaded["heavy_modules"] == []
    assert loaded["parse_s"] < DAGBAG_IMPORT_TIMEOUT_S / 3, loaded["parse_s"]
    assert loaded["schedule"] == "@daily"
    assert loaded["catchup"] is False
    expected = task_graph(
        warm_start=config["training"]["warm_start"],
        stop_on_anomalies=config.get("data", {}).get("stop_on_anomalies", True),
    )
    assert loaded["tasks"] == {node: list(upstream) for node, upstream in expected.items()}
    assert "LatestBlessedModelResolver" in loaded["tasks"]["Trainer"]  # warm start shipped


def _executions(metadata_path: Path) -> dict[str, list[str]]:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    by_node: dict[str, list[str]] = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[-1]
        for execution in store.get_executions_by_context(context.id):
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            by_node.setdefault(node, []).append(state)
    return by_node


@pytest.mark.slow
@pytest.mark.pipeline
def test_airflow_dags_test_runs_one_day_and_pushes_the_pair(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from simulator import SimulatorConfig, simulate

    # A tiny log laid out like a RecFlow download (one file per date), read through
    # data.day_pattern: days 10 and 11 train, the newest (12) is evaluated.
    simulated = tmp_path / "simulated"
    simulate(SimulatorConfig(), simulated, days=3, requests_per_day=100, seed=5)
    logs = tmp_path / "logs"
    (logs / "all_stage").mkdir(parents=True)
    for day in range(3):
        (part,) = (simulated / f"day_{day:02d}").glob("*.parquet")
        shutil.move(part, logs / "all_stage" / f"2024-01-{10 + day:02d}.parquet")
    config = _shipped_config(tmp_path, logs)
    config["data"]["day_pattern"] = "all_stage/2024-01-{day:02d}.parquet"
    config["training"]["trainer"] = {"train_steps": 20, "steps_per_epoch": 10, "batch_size": 32}
    config["evaluation"] = {"recall_floor": 0.0}
    # One in-process Beam worker: the log is tiny, worker processes would cost more than it.
    config["beam_pipeline_args"] = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    dags = _dag_folder(tmp_path, config)
    env = _airflow_env(tmp_path, dags)

    airflow = str(AIRFLOW_BIN / "airflow")
    migrate = subprocess.run(
        [airflow, "db", "migrate"], capture_output=True, text=True, env=env, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-4000:]
    run = subprocess.run(
        [airflow, "dags", "test", DAG_ID, "2025-01-02"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]

    with sqlite3.connect(tmp_path / "airflow.db") as db:
        states = dict(
            db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,))
        )
        (run_state,) = db.execute("SELECT state FROM dag_run WHERE dag_id = ?", (DAG_ID,))
    assert states == {node: "success" for node in task_graph(warm_start=True)}, states
    assert run_state == ("success",)

    # Every node executed once in ML Metadata.
    executions = _executions(tmp_path / "out" / "metadata.sqlite")
    assert executions == {node: ["COMPLETE"] for node in task_graph(warm_start=True)}

    # The newest day (12) was the eval split, found through the day pattern.
    example_gen_dir = tmp_path / "out" / "pipeline_root" / "RecFlowExampleGen"
    (stats_file,) = example_gen_dir.glob("*/*/stats.json")
    stats = json.loads(stats_file.read_text())
    day_rows = {
        day: pq.ParquetFile(logs / "all_stage" / f"2024-01-{day:02d}.parquet").metadata.num_rows
        for day in (10, 11, 12)
    }
    assert stats["splits"]["eval"]["rows_read"] == day_rows[12]
    assert stats["splits"]["train"]["rows_read"] == day_rows[10] + day_rows[11]

    # The pair is pushed: one version for both stages, SavedModels in place.
    serving = tmp_path / "out" / "serving"
    manifest = json.loads((serving / "manifest.json").read_text())
    for stage in ("retrieval", "ranking"):
        assert (serving / manifest["stages"][stage]["path"] / "saved_model.pb").exists()
    assert manifest["stages"]["retrieval"]["version"] == manifest["stages"]["ranking"]["version"]
