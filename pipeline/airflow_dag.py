"""Airflow DAG: the pipeline once a day on the newest day of logs.

Drop this file (and install the package) where Airflow looks for DAGs. Each scheduled run
evaluates on the newest day of ``data.input_base`` (days laid out by ``data.day_pattern``, as for
``lcron run``) and trains on the ``TRAIN_WINDOW`` days before it, warm-starting from the last
blessed model (continuous training). Configuration comes from ``configs/airflow.json`` next to
this file; point ``CONFIG_PATH`` elsewhere in your deployment copy. Needs the optional Airflow
extra: ``make airflow-venv``.

The file is light on purpose: Airflow re-parses DAG files constantly and gives each 30 s
(``dagbag_import_timeout``), while importing TFX alone takes ~16 s. Tasks come from
``pipeline.graph`` (checked against ``create_pipeline`` by the tests); each task builds the TFX
pipeline and runs its node when it runs (``pipeline.airflow_tasks.run_node``).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from airflow import DAG
from airflow.operators.python import PythonOperator

from pipeline.airflow_tasks import run_node
from pipeline.config import load_config
from pipeline.graph import task_graph

CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "airflow.json"
TRAIN_WINDOW = 7
SCHEDULE = "@daily"


def create_dag(config_path: Path) -> DAG:
    """The daily DAG: one task per pipeline node, with the pipeline's edges."""
    config = load_config(config_path)
    dag = DAG(
        dag_id=config.pipeline_name,
        schedule=SCHEDULE,
        start_date=datetime.datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,
        doc_md=__doc__,
    )
    tasks: dict[str, PythonOperator] = {}
    for node_id, upstream in task_graph(
        warm_start=config.training.warm_start, stop_on_anomalies=config.data.stop_on_anomalies
    ).items():
        tasks[node_id] = PythonOperator(
            task_id=node_id,
            python_callable=run_node,
            op_kwargs={
                "node_id": node_id,
                "config_path": str(config_path),
                "train_window": TRAIN_WINDOW,
            },
            dag=dag,
        )
        for name in upstream:
            tasks[node_id].set_upstream(tasks[name])
    return dag


# Airflow's DagBag collects module-level DAG objects.
daily_dag = create_dag(CONFIG_PATH)
