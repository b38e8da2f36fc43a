"""What a pipeline run produced, read back from ML Metadata and the artifacts it points to.

The console (``pipeline.console``), the summary and the run report (``pipeline.report``) read
the same facts from here: the newest execution of each node (its state and output artifacts),
the ingestion counts, the evaluation report, the push, and the training curves from the
TensorBoard event files of the Trainer's ``model_run``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An output artifact: where it is and its custom properties (plain Python values)."""

    uri: str
    properties: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class NodeOutcome:
    """The newest execution of one pipeline node.

    Attributes:
      node_id: the node's id in ``create_pipeline``.
      execution_id: its ML Metadata id.
      state: "COMPLETE", "CACHED", "FAILED", "RUNNING", ...
      outputs: output key -> artifacts.
    """

    node_id: str
    execution_id: int
    state: str
    outputs: dict[str, list[Artifact]]

    def uri(self, key: str) -> str | None:
        artifacts = self.outputs.get(key) or []
        return artifacts[0].uri if artifacts else None

    def prop(self, key: str, name: str, default: Any = None) -> Any:
        artifacts = self.outputs.get(key) or []
        return artifacts[0].properties.get(name, default) if artifacts else default


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind in ("int_value", "double_value", "string_value", "bool_value"):
        return getattr(value, kind)
    if kind == "struct_value":
        from google.protobuf import json_format

        return json_format.MessageToDict(value.struct_value)
    return None


def _store(metadata_path: str | Path) -> Any:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def node_outcomes(
    metadata_path: str | Path, pipeline_name: str, node_ids: list[str] | None = None
) -> dict[str, NodeOutcome]:
    """Node id -> its newest execution in the SQLite ML Metadata at ``metadata_path``.

    Nodes that never ran are absent; so is everything when the store does not exist yet.
    """
    from ml_metadata.proto import metadata_store_pb2

    if not Path(metadata_path).exists():
        return {}
    store = _store(metadata_path)
    prefix = f"{pipeline_name}."
    outcomes = {}
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        node_id = context.name[len(prefix) :]
        if node_ids is not None and node_id not in node_ids:
            continue
        executions = store.get_executions_by_context(context.id)
        if not executions:
            continue
        execution = max(executions, key=lambda e: e.id)
        events = [
            e
            for e in store.get_events_by_execution_ids([execution.id])
            # A resolver records what it resolved as INTERNAL_OUTPUT.
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.INTERNAL_OUTPUT)
        ]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        outputs: dict[str, list[Artifact]] = {}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else ""
            artifact = artifacts.get(event.artifact_id)
            if artifact is not None:
                properties = {k: _value(v) for k, v in artifact.custom_properties.items()}
                outputs.setdefault(key, []).append(Artifact(artifact.uri, properties))
        outcomes[node_id] = NodeOutcome(
            node_id,
            execution.id,
            metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            outputs,
        )
    return outcomes


def node_outcome(metadata_path: str | Path, pipeline_name: str, node_id: str) -> NodeOutcome | None:
    return node_outcomes(metadata_path, pipeline_name, [node_id]).get(node_id)


def read_json(uri: str | None, name: str) -> dict[str, Any] | None:
    """``<uri>/<name>`` as JSON, or None when the artifact or the file is missing."""
    if not uri:
        return None
    path = Path(uri) / name
    return json.loads(path.read_text()) if path.exists() else None


def anomalies(uri: str | None) -> dict[str, list[str]]:
    """ExampleValidator's anomalies: split -> the features with an anomaly (empty: none)."""
    if not uri:
        return {}
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = {}
    for split_dir in sorted(Path(uri).glob("Split-*")):
        for name in ("SchemaDiff.pb", "anomalies.pbtxt"):
            path = split_dir / name
            if path.exists():
                proto = anomalies_pb2.Anomalies()
                if name.endswith(".pb"):
                    proto.ParseFromString(path.read_bytes())
                else:
                    from google.protobuf import text_format

                    text_format.Parse(path.read_text(), proto)
                features = sorted(proto.anomaly_info)
                if proto.HasField("dataset_anomaly_info"):
                    features.append("(dataset)")
                found[split_dir.name[len("Split-") :]] = features
                break
    return found


def training_curves(model_run_dir: str | Path | None) -> dict[str, dict[str, list[float]]]:
    """Scalars the Trainer wrote to TensorBoard: ``{"train"|"validation": {tag: per epoch}}``.

    Reads every event file under ``model_run_dir/<train|validation>/`` (Keras' TensorBoard
    callback writes ``epoch_<name>`` scalars there once per epoch); tags lose the ``epoch_``
    prefix. Values are ordered by step.
    """
    curves: dict[str, dict[str, list[float]]] = {}
    if not model_run_dir or not Path(model_run_dir).is_dir():
        return curves
    import tensorflow as tf

    for run in ("train", "validation"):
        points: dict[str, dict[int, float]] = {}
        for path in sorted((Path(model_run_dir) / run).glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    if not value.tag.startswith("epoch_"):
                        continue
                    if value.HasField("tensor"):
                        number = float(tf.make_ndarray(value.tensor))
                    else:
                        number = float(value.simple_value)
                    points.setdefault(value.tag[len("epoch_") :], {})[int(event.step)] = number
        if points:
            curves[run] = {tag: [v for _, v in sorted(p.items())] for tag, p in points.items()}
    return curves


HEADLINE = "end_to_end_recall"


def _count(n: Any) -> str:
    return f"{int(n):,}"


def describe(outcome: NodeOutcome | None) -> str:
    """One line on what a node's newest execution produced (the console's end line)."""
    if outcome is None:
        return ""
    parts = ["cached"] if outcome.state == "CACHED" else []
    if outcome.state not in ("COMPLETE", "CACHED"):
        parts.append(outcome.state.lower())
    detail = _DESCRIBERS.get(outcome.node_id, lambda _: "")(outcome)
    if detail:
        parts.append(detail)
    return "; ".join(parts)


def _describe_example_gen(outcome: NodeOutcome) -> str:
    stats = read_json(outcome.uri("ingest_stats"), "stats.json")
    if not stats:
        return ""
    splits = ", ".join(
        f"{name} {_count(s['requests_written'])}" for name, s in sorted(stats["splits"].items())
    )
    return (
        f"{_count(stats['rows_read'])} rows read, {_count(stats['rows_dead_lettered'])}"
        f" dead-lettered; examples: {splits}"
    )


def _describe_validator(outcome: NodeOutcome) -> str:
    found = anomalies(outcome.uri("anomalies"))
    bad = {split: features for split, features in found.items() if features}
    if not found:
        return ""
    if not bad:
        return "no anomalies"
    return "anomalies: " + "; ".join(
        f"{split} {len(f)} ({', '.join(f[:3])}{', ...' if len(f) > 3 else ''})"
        for split, f in bad.items()
    )


def _describe_resolver(outcome: NodeOutcome) -> str:
    model = outcome.uri("model")
    return f"last blessed model {model}" if model else "no blessed model yet"


# The cascade's end-to-end Recall@gt@k1@...@kN as the Trainer's Keras metric names it (N >= 2
# stages; a stage's own recall is prefixed with its name).
_TRAINER_RECALL = re.compile(r"^recall_at_\d+(_at_\d+){2,}$")


def _describe_trainer(outcome: NodeOutcome) -> str:
    curves = training_curves(outcome.uri("model_run")).get("validation", {})
    recall = next((v for tag, v in sorted(curves.items()) if _TRAINER_RECALL.match(tag)), [])
    if not recall:
        return ""
    trend = " -> ".join(f"{v:.3f}" for v in recall[-4:])
    more = "... -> " if len(recall) > 4 else ""
    return f"{len(recall)} epochs, eval end-to-end recall {more}{trend}"


def _describe_evaluator(outcome: NodeOutcome) -> str:
    blessed = outcome.prop("blessing", "blessed")
    reason = outcome.prop("blessing", "reason", "")
    if blessed is None:
        return ""
    return f"{'blessed' if blessed == 1 else 'NOT blessed'} ({reason})"


def _describe_pusher(outcome: NodeOutcome) -> str:
    if outcome.prop("pushed_model", "pushed") == 1:
        version = outcome.prop("pushed_model", "pushed_version")
        destination = outcome.prop("pushed_model", "pushed_destination", "")
        return f"pushed version {version} to {destination}"
    reason = outcome.prop("pushed_model", "reason")
    return f"not pushed ({reason})" if reason else ""


_DESCRIBERS = {
    "RecFlowExampleGen": _describe_example_gen,
    "ExampleValidator": _describe_validator,
    "LatestBlessedModelResolver": _describe_resolver,
    "Trainer": _describe_trainer,
    "CascadeEvaluator": _describe_evaluator,
    "CascadePusher": _describe_pusher,
}
