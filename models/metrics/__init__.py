"""Cascade metrics: one implementation, as plain TensorFlow functions and Keras metrics.

Per request ([batch] values, ``functions``): end-to-end ``cascade_recall`` (Recall@gt@k1@...@kN,
the paper's headline), per-stage ``stage_recall`` (Recall@gt@k), ``ndcg`` (NDCG@k) and
``kendall_tau`` against the labels; ties are counted in expectation, so no value depends on
list order (see ``functions``). ``keras_metrics``: the stateful means over requests, with one
averaging rule (``requests_counted``). ``from_config(MetricConfig, stages)`` builds the paper's
set for a cascade of any depth; the Trainer logs them and the CascadeEvaluator blesses with them
(``update_cascade_metrics``).

TensorFlow is imported lazily so that ``from models import metrics`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from models.config import MetricConfig, StageConfig

CASCADE_ROLE = "cascade_recall"
# Per-stage roles of ``from_config``: "<stage name><suffix>".
STAGE_ROLE_SUFFIXES: tuple[str, ...] = ("_recall", "_ndcg", "_kendall_tau")

_FUNCTIONS = (
    "cascade_recall",
    "cascade_selection",
    "expected_top_k",
    "ground_truth_weights",
    "kendall_tau",
    "ndcg",
    "requests_counted",
    "stage_recall",
)
_CLASSES = ("CascadeRecall", "StageRecall", "NDCG", "KendallTau", "update_cascade_metrics")

__all__ = [
    *_FUNCTIONS,
    *_CLASSES,
    "CASCADE_ROLE",
    "STAGE_ROLE_SUFFIXES",
    "from_config",
    "role_stage",
]


def role_stage(role: str) -> str:
    """The stage a per-stage role of ``from_config`` belongs to ("ranking_ndcg" -> "ranking")."""
    for suffix in STAGE_ROLE_SUFFIXES:
        if role.endswith(suffix):
            return role[: -len(suffix)]
    raise ValueError(f"not a per-stage metric role: {role!r}")


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        from models.metrics import functions

        return getattr(functions, name)
    if name in _CLASSES:
        from models.metrics import keras_metrics

        return getattr(keras_metrics, name)
    raise AttributeError(f"module 'models.metrics' has no attribute {name!r}")


def from_config(
    config: MetricConfig | None = None, stages: Sequence[StageConfig] | None = None
) -> dict[str, Any]:
    """The paper's metrics for an N-stage cascade, by role.

    Args:
      config: gt_num and ndcg_k.
      stages: the cascade (``ModelConfig.stages``), first stage first; its keeps are the
        cut-offs k1..kN. None: the default two stages (retrieval keeps 30, ranking 20).

    Returns:
      {"cascade_recall": CascadeRecall((k1, ..., kN), gt_num)} and per stage s (keep k_s):
      "<s>_recall": StageRecall(k_s, gt_num), "<s>_ndcg": NDCG(ndcg_k), "<s>_kendall_tau":
      KendallTau(); metric names are prefixed by the stage so that they stay unique in a Keras
      model (e.g. ``retrieval_recall_at_10_at_30``, ``recall_at_10_at_30_at_20``).
    """
    from models.config import DEFAULT_STAGES, MetricConfig
    from models.metrics import keras_metrics as km

    config = config or MetricConfig()
    stages = tuple(stages or DEFAULT_STAGES)
    gt, ndcg_k = config.gt_num, config.ndcg_k
    built: dict[str, Any] = {
        CASCADE_ROLE: km.CascadeRecall(tuple(s.keep for s in stages), gt),
    }
    for stage in stages:
        name, k = stage.name, stage.keep
        built[f"{name}_recall"] = km.StageRecall(k, gt, name=f"{name}_recall_at_{gt}_at_{k}")
        built[f"{name}_ndcg"] = km.NDCG(ndcg_k, name=f"{name}_ndcg_at_{ndcg_k}")
        built[f"{name}_kendall_tau"] = km.KendallTau(name=f"{name}_kendall_tau")
    return built
