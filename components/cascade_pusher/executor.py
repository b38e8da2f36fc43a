"""Executor of CascadePusher: push every stage if blessed, record what happened."""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.cascade_evaluator import evaluation
from components.cascade_pusher import pair_push, warmup
from models import stage_spec


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        serving_dir = exec_properties["serving_dir"]

        if blessing.get_int_custom_property("blessed") != 1:
            reason = blessing.get_string_custom_property("reason") or "not blessed"
            logging.warning("model %s not pushed: %s", model.uri, reason)
            pushed.set_int_custom_property("pushed", 0)
            pushed.set_string_custom_property("reason", reason)
            return

        in_service = _serving_model(serving_dir)
        if in_service == model.uri:
            # A re-run with the same model (e.g. the baseline changed, not the model): pushing
            # it again would only churn versions.
            logging.info("model %s is already in service; nothing to push", model.uri)
            pushed.set_int_custom_property("pushed", 0)
            pushed.set_string_custom_property("reason", "already in service")
            return

        metrics: dict[str, Any] = {"source_model": model.uri}
        evaluations = input_dict.get("evaluation") or []
        if evaluations:
            report = json.loads((Path(evaluations[0].uri) / "metrics.json").read_text())
            metrics["evaluation"] = report["candidate"]["overall"]

        stages, export_dirs = stage_spec.export_stage_dirs(model.uri)
        files = evaluation.split_files(examples.uri, exec_properties["eval_split"])
        records = warmup.warmup_records(
            _read_records(files, exec_properties["warmup_requests"]),
            limit=exec_properties["warmup_requests"],
            stages=stages,
        )
        version = pair_push.push_cascade(
            export_dirs,
            serving_dir,
            records,
            stages=stages,
            metrics=metrics,
            min_index_recall=exec_properties.get("min_index_recall"),
        )
        pushed.set_int_custom_property("pushed", 1)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_destination", serving_dir)
        Path(pushed.uri).mkdir(parents=True, exist_ok=True)
        (Path(pushed.uri) / "push.json").write_text(
            json.dumps({"version": version, "serving_dir": serving_dir, "model": model.uri})
        )


def _serving_model(serving_dir: str) -> str | None:
    """The Trainer model URI of the cascade in service, as recorded by the last push."""
    from serving import manifest as manifest_lib

    try:
        manifest = manifest_lib.read_manifest(serving_dir)
    except FileNotFoundError:
        return None
    return (manifest.get("metrics") or {}).get("source_model")


def _read_records(files: list[str], limit: int) -> list[bytes]:
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [bytes(r) for r in islice(dataset.as_numpy_iterator(), limit)]
