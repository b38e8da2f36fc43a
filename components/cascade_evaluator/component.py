"""TFX component spec of the cascade evaluator (Evaluator's role for an N-stage cascade).

TFMA evaluates one model's per-example predictions; the cascade metric needs every stage's
scores over the same list of candidates, so this component scores the eval split with every
stage's exported SavedModel and writes a ``ModelEvaluation`` plus a ``ModelBlessing`` that TFX's
``LatestBlessedModelStrategy`` understands (``blessed`` and ``current_model_id`` properties).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.cascade_evaluator import executor


class CascadeEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        "eval_split": ExecutionParameter(type=str),
        "recall_floor": ExecutionParameter(type=float),
        "max_regression": ExecutionParameter(type=float),
        "min_lift_over_chance": ExecutionParameter(type=float),
        "slice_features": ExecutionParameter(type=str),  # JSON list
        "metric_config": ExecutionParameter(type=str),  # JSON of models.config.MetricConfig
        # JSON list of models.config.StageConfig (ModelConfig.stages); "[]": the default two.
        "stages": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class CascadeEvaluator(base_component.BaseComponent):
    """Evaluates the cascade on the eval split and blesses it (``evaluation.decide_blessing``):
    above an absolute floor, above chance level by ``min_lift_over_chance``, and within
    ``max_regression`` of the last blessed model."""

    SPEC_CLASS = CascadeEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: types.BaseChannel | None = None,
        *,
        eval_split: str = "eval",
        recall_floor: float = 0.5,
        max_regression: float = 0.01,
        min_lift_over_chance: float = 0.1,
        slice_features: Sequence[str] = ("gender",),
        metric_config: dict | None = None,
        stages: Sequence[dict] | None = None,
    ):
        spec = CascadeEvaluatorSpec(
            examples=examples,
            model=model,
            baseline_model=baseline_model,
            eval_split=eval_split,
            recall_floor=float(recall_floor),
            max_regression=float(max_regression),
            min_lift_over_chance=float(min_lift_over_chance),
            slice_features=json.dumps(list(slice_features)),
            metric_config=json.dumps(metric_config or {}),
            stages=json.dumps(_stage_dicts(stages)),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        )
        super().__init__(spec=spec)


def _stage_dicts(stages: Sequence[dict] | None) -> list[dict]:
    """The stages as JSON-ready dicts, validated now (a bad cascade fails at pipeline build)."""
    from models.config import parse_stages, validate_stages

    if not stages:
        return []
    parsed = validate_stages(parse_stages(list(stages)))
    return [s.to_dict() for s in parsed]
