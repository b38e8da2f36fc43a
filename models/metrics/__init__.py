"""Cascade metrics: one implementation, as plain TensorFlow functions and Keras metrics.

Per request ([batch] values, ``functions``): end-to-end ``cascade_recall`` (Recall@gt@k1@k2,
the paper's headline), per-stage ``stage_recall`` (Recall@gt@k), ``ndcg`` (NDCG@k) and
``kendall_tau`` against the labels; ties are counted in expectation, so no value depends on
list order (see ``functions``). ``keras_metrics``: the stateful means over requests, with one
averaging rule (``requests_counted``). ``from_config(MetricConfig)`` builds the paper's set for
a two-stage cascade; the Trainer logs them and the CascadeEvaluator blesses with them
(``update_cascade_metrics``).

TensorFlow is imported lazily so that ``from models import metrics`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.config import MetricConfig

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

__all__ = [*_FUNCTIONS, *_CLASSES, "from_config"]


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        from models.metrics import functions

        return getattr(functions, name)
    if name in _CLASSES:
        from models.metrics import keras_metrics

        return getattr(keras_metrics, name)
    raise AttributeError(f"module 'models.metrics' has no attribute {name!r}")


def from_config(config: MetricConfig | None = None) -> dict[str, Any]:
    """The paper's metrics for a two-stage cascade, by role.

    Returns:
      {"cascade_recall": CascadeRecall((k1, k2), gt_num),
       "retrieval_recall": StageRecall(k1, gt_num), "ranking_recall": StageRecall(k2, gt_num),
       "retrieval_ndcg"/"ranking_ndcg": NDCG(ndcg_k),
       "retrieval_kendall_tau"/"ranking_kendall_tau": KendallTau()}; metric names are prefixed
      by the role so that they stay unique in a Keras model.
    """
    from models.config import MetricConfig
    from models.metrics import keras_metrics as km

    config = config or MetricConfig()
    gt, k1, k2 = config.gt_num, config.k1, config.k2
    return {
        "cascade_recall": km.CascadeRecall((k1, k2), gt),
        "retrieval_recall": km.StageRecall(k1, gt, name=f"retrieval_recall_at_{gt}_at_{k1}"),
        "ranking_recall": km.StageRecall(k2, gt, name=f"ranking_recall_at_{gt}_at_{k2}"),
        "retrieval_ndcg": km.NDCG(config.ndcg_k, name=f"retrieval_ndcg_at_{config.ndcg_k}"),
        "ranking_ndcg": km.NDCG(config.ndcg_k, name=f"ranking_ndcg_at_{config.ndcg_k}"),
        "retrieval_kendall_tau": km.KendallTau(name="retrieval_kendall_tau"),
        "ranking_kendall_tau": km.KendallTau(name="ranking_kendall_tau"),
    }
