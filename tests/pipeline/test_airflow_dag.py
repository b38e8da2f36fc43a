"""The Airflow DAG loads in Airflow's DagBag (optional extra in .venv-airflow) and is daily."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.schedule import day_numbers, newest_day_splits

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"

LOAD_DAG = """
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
# bag.dags, not get_dag(): get_dag() also reads the metadata DB, which parsing does not need.
dag = bag.dags.get("lcron-cascade")
print(json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "schedule": str(dag.schedule_interval) if dag else None,
    "catchup": dag.catchup if dag else None,
    "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} if dag else {},
}))
"""


def test_newest_day_is_evaluated(tmp_path: Path) -> None:
    for day in (0, 1, 2, 3, 11):
        (tmp_path / f"day_{day:02d}").mkdir()
    (tmp_path / "manifest.json").write_text("{}")
    days = day_numbers(tmp_path)
    assert days == [0, 1, 2, 3, 11]
    assert newest_day_splits(days, window=9) == ([2, 3], [11])
    with pytest.raises(ValueError, match="no day of logs within 7 days"):
        newest_day_splits(days, window=7)
    assert newest_day_splits([0, 1, 2], window=7) == ([0, 1], [2])
    with pytest.raises(ValueError, match="two day folders"):
        newest_day_splits([5], window=7)


@pytest.mark.slow
def test_dagbag_loads_the_daily_dag(tmp_path: Path) -> None:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail("the Airflow extra is missing: `make airflow-venv` (make test builds it)")
    dags = tmp_path / "dags"
    (dags / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "pipeline" / "airflow_dag.py", dags / "airflow_dag.py")
    logs = tmp_path / "logs"
    for day in range(4):
        (logs / f"day_{day:02d}").mkdir(parents=True)
    # The shipped configuration (continuous training: warm start), with this test's paths.
    config = json.loads((ROOT / "pipeline" / "configs" / "airflow.json").read_text())
    config["output_dir"] = str(tmp_path / "out")
    config["data"]["input_base"] = str(logs)
    (dags / "configs" / "airflow.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", LOAD_DAG, str(dags)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["import_errors"] == {}
    assert loaded["dag_ids"] == ["lcron-cascade"]
    assert loaded["schedule"] == "@daily"
    assert loaded["catchup"] is False
    tasks = loaded["tasks"]
    assert set(tasks) == {
        "RecFlowExampleGen",
        "StatisticsGen",
        "ImportSchemaGen",
        "ExampleValidator",
        "Transform",
        "LatestBlessedModelResolver",
        "Trainer",
        "CascadeEvaluator",
        "CascadePusher",
    }
    trainer_inputs = ["ImportSchemaGen", "LatestBlessedModelResolver", "Transform"]
    assert tasks["Trainer"] == sorted(trainer_inputs)
    assert "Trainer" in tasks["CascadeEvaluator"]
    assert tasks["CascadePusher"] == sorted(["CascadeEvaluator", "RecFlowExampleGen", "Trainer"])
