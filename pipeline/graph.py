"""The pipeline's task graph (node ids and their upstream nodes) without importing TFX.

Schedulers re-parse DAG files all the time and Airflow gives a file 30 s (its
``dagbag_import_timeout``); importing TFX alone takes ~16 s on our machines. So the Airflow DAG
builds its tasks from this table, and each task builds the real ``create_pipeline`` when it
runs (``pipeline.airflow_tasks``). ``tests/pipeline/test_airflow_dag.py`` checks that the table
equals the graph of ``create_pipeline``: change both together.
"""

from __future__ import annotations

# node id -> upstream node ids, in create_pipeline's topological order; the Trainer's edge from
# the resolver exists only with warm start (see ``task_graph``).
_NODES: dict[str, tuple[str, ...]] = {
    "ImportSchemaGen": (),
    "LatestBlessedModelResolver": (),
    "RecFlowExampleGen": (),
    "StatisticsGen": ("RecFlowExampleGen",),
    "Transform": ("ImportSchemaGen", "RecFlowExampleGen"),
    "ExampleValidator": ("ImportSchemaGen", "StatisticsGen"),
    "Trainer": ("ImportSchemaGen", "Transform"),
    "CascadeEvaluator": ("LatestBlessedModelResolver", "RecFlowExampleGen", "Trainer"),
    "CascadePusher": ("CascadeEvaluator", "RecFlowExampleGen", "Trainer"),
}
_WARM_START_EDGES = {"Trainer": ("LatestBlessedModelResolver",)}


def task_graph(*, warm_start: bool) -> dict[str, tuple[str, ...]]:
    """Node id -> sorted upstream node ids of ``create_pipeline(warm_start=...)``.

    Keys come in a topological order (every node after its upstream nodes).
    """
    graph = dict(_NODES)
    if warm_start:
        for node, extra in _WARM_START_EDGES.items():
            graph[node] = tuple(sorted({*graph[node], *extra}))
    return graph
