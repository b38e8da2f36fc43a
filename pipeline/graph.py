"""The pipeline's task graph (node ids and their upstream nodes) without importing TFX.

Schedulers re-parse DAG files all the time and Airflow gives a file 30 s (its
``dagbag_import_timeout``); importing TFX alone takes ~16 s on our machines. So the Airflow DAG
builds its tasks from this table, and each task builds the real ``create_pipeline`` when it
runs (``pipeline.airflow_tasks``). ``tests/pipeline/test_airflow_dag.py`` checks that the table
equals the graph of ``create_pipeline``: change both together.
"""

from __future__ import annotations

# node id -> upstream node ids; the Trainer's edge from
# the resolver exists only with warm start, Transform's from the strict ExampleValidator only
# when anomalies stop the run (see ``task_graph``).
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
_STOP_ON_ANOMALIES_EDGES = {"Transform": ("ExampleValidator",)}


def task_graph(*, warm_start: bool, stop_on_anomalies: bool = True) -> dict[str, tuple[str, ...]]:
    """Node id -> sorted upstream node ids of ``create_pipeline(warm_start=...,
    stop_on_anomalies=...)``.

    Keys come in TFX's topological order: layer by layer (a node's layer is one more than its
    deepest upstream node's), by node id within a layer.
    """
    graph = dict(_NODES)
    extras = {
        **(_WARM_START_EDGES if warm_start else {}),
        **(_STOP_ON_ANOMALIES_EDGES if stop_on_anomalies else {}),
    }
    for node, extra in extras.items():
        graph[node] = tuple(sorted({*graph[node], *extra}))
    layer: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in layer:
            layer[node] = 1 + max((depth(up) for up in graph[node]), default=-1)
        return layer[node]

    return {node: graph[node] for node in sorted(graph, key=lambda n: (depth(n), n))}
