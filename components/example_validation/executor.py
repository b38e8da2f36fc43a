"""Executor of StrictExampleValidator: TFX's validation, then a failure when anything is off.

TFX's ExampleValidator records anomalies (and a per-split ``blessed`` property) but lets the
run go on, so Transform and the Trainer would consume examples that break the schema. This
executor runs the same validation and writes the same ``anomalies`` artifact, then raises
``DataAnomaliesError`` naming every anomaly, which fails the run before Transform (the
anomalies are copied to ``<artifact uri>_failed_run``: TFX deletes a failed component's outputs).
"""

from __future__ import annotations

import os
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator import executor as tfx_executor
from tfx.components.example_validator import labels
from tfx.components.util import value_utils
from tfx.utils import io_utils

FAILED_RUN_SUFFIX = "_failed_run"


class DataAnomaliesError(RuntimeError):
    """The examples break the curated schema; the message lists the anomalies by split."""


def describe(split: str, anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per anomaly of a split: feature, short description, description."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        detail = "; ".join(r.description for r in info.reason) or info.description
        lines.append(f"  split '{split}', feature '{feature}': {info.short_description}: {detail}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        detail = "; ".join(r.description for r in info.reason) or info.description
        lines.append(f"  split '{split}', dataset: {info.short_description}: {detail}")
    return lines


class Executor(tfx_executor.Executor):
    """ExampleValidator's executor that fails when any validated split has anomalies."""

    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ):
        self._found: list[tuple[str, anomalies_pb2.Anomalies]] = []
        result = super().Do(input_dict, output_dict, exec_properties)
        lines = [line for split, anomalies in self._found for line in describe(split, anomalies)]
        if lines:
            # TFX deletes a failed component's outputs: keep the anomalies next to them.
            anomalies_uri = output_dict["anomalies"][0].uri
            kept = anomalies_uri.rstrip("/") + FAILED_RUN_SUFFIX
            io_utils.copy_dir(anomalies_uri, kept)
            raise DataAnomaliesError(
                "the examples break the curated schema (data/schema.pbtxt); the run stops"
                " before Transform:\n"
                + "\n".join(lines)
                + f"\nAnomalies (SchemaDiff.pb per split) kept in {kept}. Fix the input or the"
                " schema; to record anomalies without stopping, set"
                " data.stop_on_anomalies=false."
            )
        return result

    def _Validate(  # noqa: N802 (TFX's executor interface)
        self, inputs: dict[str, Any], outputs: dict[str, Any]
    ) -> anomalies_pb2.Anomalies:
        anomalies = super()._Validate(inputs, outputs)
        if anomalies.anomaly_info or anomalies.HasField("dataset_anomaly_info"):
            # The output folder is <artifact uri>/Split-<name>.
            path = str(value_utils.GetSoleValue(outputs, labels.SCHEMA_DIFF_PATH)).rstrip("/")
            self._found.append((os.path.basename(path).removeprefix("Split-"), anomalies))
        return anomalies
