"""RecFlowExampleGen: a custom TFX ExampleGen for RecFlow-schema logs.

One list-wise ``tf.Example`` per request with ground truth, one split per group of days, a
dead-letter output for malformed rows and the ingestion counts as an artifact. See
``docs/ingestion.md`` for the input format and ``beam_pipeline.py`` for the Beam job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.recflow_example_gen import executor, presets
from components.recflow_example_gen.beam_pipeline import DEFAULT_MAX_DEAD_LETTER_SHARE
from components.recflow_example_gen.driver import RecFlowDriver
from components.recflow_example_gen.listwise import ListConfig
from components.recflow_example_gen.rows import FORMATS
from models import features


# Kubeflow Pipelines v2 (Vertex) accepts a custom artifact type only as "<namespace>.<Name>" and
# without PROPERTIES (custom properties are fine): hence the names, and split names kept as a
# custom property.
class DeadLetters(types.Artifact):
    """Malformed log rows, one JSON object per line: source, row, kind, field, reason, record.

    Custom property ``split_names``: the splits, JSON-encoded like ``Examples.split_names``.
    """

    TYPE_NAME = "lcron.RecFlowDeadLetters"


class IngestStats(types.Artifact):
    """``stats.json``: rows read / in examples / dead-lettered / left out, requests written."""

    TYPE_NAME = "lcron.RecFlowIngestStats"


class RecFlowExampleGenSpec(types.ComponentSpec):
    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        "input_config": ExecutionParameter(type=example_gen_pb2.Input),
        "input_format": ExecutionParameter(type=str),
        "list_size": ExecutionParameter(type=int),
        "group_size": ExecutionParameter(type=int, optional=True),
        "label_mode": ExecutionParameter(type=str),
        # JSON list of stage groups, best first (ListConfig.groups); absent: the default four.
        "groups": ExecutionParameter(type=str, optional=True),
        "validation_config": ExecutionParameter(type=str, optional=True),  # JSON
        "max_dead_letter_share": ExecutionParameter(type=float, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.DEAD_LETTERS_KEY: ChannelParameter(type=DeadLetters),
        executor.INGEST_STATS_KEY: ChannelParameter(type=IngestStats),
    }


class RecFlowExampleGen(base_component.BaseComponent):
    """Ingests daily RecFlow logs (Parquet, CSV or feather) into list-wise examples.

    Outputs: ``examples`` (Examples, one split per entry of ``input_config``), ``dead_letters``
    and ``ingest_stats``. Beam args come from the pipeline's ``beam_pipeline_args``.
    """

    SPEC_CLASS = RecFlowExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = RecFlowDriver

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input,
        *,
        input_format: str = "parquet",
        list_size: int = features.LIST_SIZE,
        group_size: int | None = None,
        label_mode: str = "ground_truth",
        groups: Sequence[str] | None = None,
        validation: dict[str, Any] | None = None,
        preset: str = "default",
        max_dead_letter_share: float = DEFAULT_MAX_DEAD_LETTER_SHARE,
    ):
        """Args:
        input_base: folder holding the daily logs (local or a Beam filesystem URL).
        input_config: splits and their comma-separated globs (see ``splits.day_splits``).
        input_format: "parquet", "csv" or "feather".
        list_size: candidates per example; group_size: per stage group (default
          list_size / len(groups)).
        label_mode: "ground_truth" (the paper's graded label) or "feedback".
        groups: the stage groups, best first, the first the ground truth
          (``listwise.ListConfig.groups``); None: rank_pos, rank_neg, coarse_neg, prerank_neg.
        validation: ``rows.ValidationConfig`` fields (time units, timestamp bounds), over
          the preset's.
        preset: named input conventions (``presets.PRESETS``: "default", "recflow").
        max_dead_letter_share: the component fails when a split dead-letters more than this
          share of its rows, or writes no example (see ``beam_pipeline.check_stats``).
        """
        if input_format not in FORMATS:
            raise ValueError(f"input_format {input_format!r} not in {FORMATS}")
        list_config = ListConfig(
            list_size=list_size,
            group_size=group_size,
            label_mode=label_mode,
            **({} if groups is None else {"groups": tuple(groups)}),
        )
        validation = presets.validation_fields(preset, validation)
        if not 0.0 <= max_dead_letter_share <= 1.0:
            raise ValueError(f"max_dead_letter_share {max_dead_letter_share} not in [0, 1]")
        spec = RecFlowExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            input_format=input_format,
            list_size=list_size,
            group_size=group_size,
            label_mode=label_mode,
            groups=None if groups is None else json.dumps(list(list_config.groups)),
            validation_config=json.dumps(validation, sort_keys=True),
            max_dead_letter_share=float(max_dead_letter_share),
            examples=types.Channel(type=standard_artifacts.Examples),
            dead_letters=types.Channel(type=DeadLetters),
            ingest_stats=types.Channel(type=IngestStats),
        )
        super().__init__(spec=spec)
