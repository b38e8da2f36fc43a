"""Executor of RecFlowExampleGen: runs the Beam ingestion into TFX artifacts.

Outputs:
  examples: ``Split-<name>/data_tfrecord-*.gz`` (gzipped TFRecords of list-wise tf.Examples),
    ``split_names`` set, payload format ``FORMAT_TF_EXAMPLE``: StatisticsGen, SchemaGen,
    ExampleValidator and Transform read it like any ExampleGen's output.
  dead_letters: ``Split-<name>/dead_letters-*.jsonl``, one JSON object per malformed row.
  ingest_stats: ``stats.json`` (row and request counts, per split and in total).
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils, proto_utils

from components.recflow_example_gen import beam_pipeline, listwise, rows, splits

EXAMPLES_KEY = "examples"
DEAD_LETTERS_KEY = "dead_letters"
INGEST_STATS_KEY = "ingest_stats"
FAILED_RUN_SUFFIX = "_failed_run"


def config_from_exec_properties(exec_properties: dict[str, Any]) -> beam_pipeline.IngestConfig:
    validation = json.loads(exec_properties.get("validation_config") or "{}")
    share = exec_properties.get("max_dead_letter_share")
    return beam_pipeline.IngestConfig(
        input_format=exec_properties["input_format"],
        list=listwise.ListConfig(
            list_size=int(exec_properties["list_size"]),
            group_size=int(exec_properties.get("group_size") or 0) or None,
            label_mode=exec_properties["label_mode"],
            **_groups(exec_properties.get("groups")),
        ),
        validation=rows.ValidationConfig(**validation),
        max_dead_letter_share=(
            beam_pipeline.DEFAULT_MAX_DEAD_LETTER_SHARE if share is None else float(share)
        ),
    )


def _groups(value: str | None) -> dict[str, Any]:
    """``ListConfig`` keyword for the ``groups`` exec property (absent: the default groups)."""
    return {"groups": tuple(json.loads(value))} if value else {}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads the daily logs of every split and writes examples, dead letters and stats."""

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties["input_config"], input_config)
        patterns = splits.split_patterns(input_config)
        config = config_from_exec_properties(exec_properties)
        input_base = exec_properties["input_base"]
        split_paths = {
            name: beam_pipeline.match_split_files(input_base, pattern)
            for name, pattern in patterns.items()
        }

        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        dead_letters = artifact_utils.get_single_instance(output_dict[DEAD_LETTERS_KEY])
        stats_artifact = artifact_utils.get_single_instance(output_dict[INGEST_STATS_KEY])
        work_dir = os.path.join(self._get_tmp_dir(), "counts")
        with self._make_beam_pipeline() as pipeline:
            beam_pipeline.ingest(
                pipeline, split_paths, config, examples.uri, dead_letters.uri, work_dir
            )
        stats = beam_pipeline.read_stats(split_paths, config, work_dir)
        beam_pipeline.write_stats(stats, os.path.join(stats_artifact.uri, beam_pipeline.STATS_FILE))

        split_names = artifact_utils.encode_split_names(list(split_paths))
        examples.split_names = split_names
        dead_letters.set_string_custom_property("split_names", split_names)
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        for key in beam_pipeline.COUNT_KEYS:
            stats_artifact.set_int_custom_property(key, int(stats[key]))
        try:
            beam_pipeline.check_stats(stats, config, dead_letters.uri)
        except beam_pipeline.IngestionError:
            # TFX deletes a failed component's outputs: point the error at a copy.
            kept = keep_for_inspection(dead_letters.uri, stats_artifact.uri)
            beam_pipeline.check_stats(stats, config, kept)
            raise


def keep_for_inspection(dead_letters_uri: str, stats_uri: str) -> str:
    """Copies a failed run's dead letters and stats.json to ``<dead letters uri>_failed_run``
    (TFX removes the artifact folders of a failed component); returns that folder."""
    kept = dead_letters_uri.rstrip("/") + FAILED_RUN_SUFFIX
    io_utils.copy_dir(dead_letters_uri, kept)
    io_utils.copy_file(
        os.path.join(stats_uri, beam_pipeline.STATS_FILE),
        os.path.join(kept, beam_pipeline.STATS_FILE),
        overwrite=True,
    )
    return kept
