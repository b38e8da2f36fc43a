"""TFX component spec of the cascade push (Pusher's role for an N-stage cascade).

TFX's Pusher pushes one model per instance and picks its own version per push, so N Pushers
would give the stages unrelated versions. This component pushes every stage's SavedModel of one
Trainer run under one version, atomically (see ``pair_push``), after validating them in a fresh
process.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.cascade_pusher import executor


class CascadePusherSpec(types.ComponentSpec):
    PARAMETERS = {
        "serving_dir": ExecutionParameter(type=str),
        "eval_split": ExecutionParameter(type=str),
        "warmup_requests": ExecutionParameter(type=int),
        "min_index_recall": ExecutionParameter(type=float),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class CascadePusher(base_component.BaseComponent):
    """Pushes a blessed cascade (every stage) into a TF Serving model base; skips otherwise."""

    SPEC_CLASS = CascadePusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        examples: types.BaseChannel,
        serving_dir: str,
        evaluation: types.BaseChannel | None = None,
        *,
        eval_split: str = "eval",
        warmup_requests: int = 32,
        min_index_recall: float = 0.95,
    ):
        """Args: see ``pair_push.push_cascade``; ``min_index_recall`` is the recall@K floor of an
        approximate retrieval index (measured at export): below it the push fails."""
        spec = CascadePusherSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            evaluation=evaluation,
            serving_dir=serving_dir,
            eval_split=eval_split,
            warmup_requests=warmup_requests,
            min_index_recall=min_index_recall,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
