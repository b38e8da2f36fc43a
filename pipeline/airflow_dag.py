"""Airflow DAG: the pipeline once a day on the newest day of logs (AirflowDagRunner).

Drop this file (and the package) where Airflow looks for DAGs. Each scheduled run evaluates on
the newest complete day folder of ``data.input_base`` and trains on the ``TRAIN_WINDOW`` days
before it, warm-starting from the last blessed model (continuous training). Configuration comes
from ``pipeline/configs/airflow.json``; point ``CONFIG_PATH`` elsewhere in your deployment copy.
Needs the optional Airflow extra: ``make airflow-venv``.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from pipeline.config import PipelineConfig, load_config
from pipeline.schedule import day_numbers, newest_day_splits

CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "airflow.json"
TRAIN_WINDOW = 7
SCHEDULE = "@daily"


def create_dag(config: PipelineConfig):
    """The Airflow DAG of the pipeline for ``config``."""
    from tfx.orchestration import metadata
    from tfx.orchestration.airflow.airflow_dag_runner import (
        AirflowDagRunner,
        AirflowPipelineConfig,
    )

    from pipeline.local_runner import create_from_config

    days = day_numbers(config.data.input_base)
    # Until two days of logs exist the DAG still parses (runs would fail in ExampleGen, naming
    # the missing folder); afterwards every parse picks up the newest day.
    train_days, eval_days = newest_day_splits(days, TRAIN_WINDOW) if len(days) >= 2 else ([0], [1])
    tfx_pipeline = create_from_config(
        config,
        input_base=config.data.input_base,
        train_days=train_days,
        eval_days=eval_days,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path),
    )
    airflow_config = {
        "schedule_interval": SCHEDULE,
        "start_date": datetime.datetime(2025, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
    }
    return AirflowDagRunner(AirflowPipelineConfig(airflow_config)).run(tfx_pipeline)


# Airflow's DagBag collects module-level DAG objects.
DAG = create_dag(load_config(CONFIG_PATH))
