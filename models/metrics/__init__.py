"""Cascade metrics: plain functions (TensorFlow and NumPy twins) and Keras metric classes.

Per request ([batch] values): end-to-end ``cascade_recall`` (Recall@gt@k1@k2, the paper's
headline), per-stage ``stage_recall`` (Recall@gt@k), ``ndcg`` (NDCG@k) and ``kendall_tau``
against the labels. ``numpy_metrics`` has the same functions over NumPy arrays;
``keras_metrics`` the stateful means (see its docstring for ``update_state``).
``from_config(MetricConfig)`` builds the paper's set for a two-stage cascade.

The Keras classes are imported lazily so that ``models.metrics.numpy_metrics`` can be used
without TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.config import MetricConfig

_FUNCTIONS = ("cascade_recall", "cascade_selection", "stage_recall", "ndcg", "kendall_tau")
_CLASSES = ("CascadeRecall", "StageRecall", "NDCG", "KendallTau")

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
