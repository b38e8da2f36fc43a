"""What each task of the Airflow DAG runs: one node of ``create_pipeline``, like LocalDagRunner.

The DAG file (``pipeline/airflow_dag.py``) stays light: it imports neither TFX nor TensorFlow
and builds its tasks from ``pipeline.graph``. Each task, when it runs, builds the pipeline from
the configuration, compiles it to TFX's intermediate representation and launches its own node
with TFX's portable launcher (the same code path as ``LocalDagRunner``), with the Airflow run id
as the pipeline run id so that the tasks of one DAG run resolve each other's outputs in ML
Metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, load_config
from pipeline.schedule import day_numbers, newest_day_splits


def scheduled_days(config: PipelineConfig, train_window: int) -> tuple[list[int], list[int]]:
    """(train days, eval days) of a scheduled run: the newest day of ``data.input_base`` (as
    ``data.day_pattern`` lays days out) is evaluated, the ``train_window`` days before it train.

    Raises:
      ValueError: fewer than two days of logs, naming the input base and the pattern.
    """
    data = config.data
    days = day_numbers(data.input_base, data.day_pattern)
    try:
        return newest_day_splits(days, train_window)
    except ValueError as err:
        raise ValueError(f"{data.input_base} ({data.day_pattern}): {err}") from err


def build_ir(config: PipelineConfig, train_window: int, run_id: str) -> Any:
    """The compiled pipeline (``pipeline_pb2.Pipeline``) of a scheduled run with id ``run_id``."""
    from tfx.dsl.compiler import compiler, constants
    from tfx.orchestration import metadata
    from tfx.orchestration.portable import runtime_parameter_utils

    from pipeline.local_runner import create_from_config

    train_days, eval_days = scheduled_days(config, train_window)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    tfx_pipeline = create_from_config(
        config,
        input_base=config.data.input_base,
        train_days=train_days,
        eval_days=eval_days,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(config.metadata_path),
    )
    ir = compiler.Compiler().compile(tfx_pipeline)
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id}
    )
    return ir


def run_node(node_id: str, config_path: str, train_window: int, **context: Any) -> None:
    """Airflow ``python_callable``: runs node ``node_id`` of this DAG run's pipeline.

    Raises:
      KeyError: ``node_id`` is not a node of ``create_pipeline`` (the DAG and the pipeline
        disagree).
      Exception: whatever the component raised (Airflow marks the task failed).
    """
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher

    config = load_config(config_path)
    run_id = context["dag_run"].run_id
    ir = build_ir(config, train_window, run_id)
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    if node_id not in nodes:
        raise KeyError(f"task {node_id!r} is not a node of the pipeline: {sorted(nodes)}")
    deployment = runner_utils.extract_local_deployment_config(ir)
    connection = deployment.metadata_connection_config
    connection_config = getattr(connection, connection.WhichOneof("connection_config"))
    logging.info("pipeline run %s: running %s", run_id, node_id)
    launcher.Launcher(
        pipeline_node=nodes[node_id],
        mlmd_connection=metadata.Metadata(connection_config),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment, node_id),
    ).launch()
