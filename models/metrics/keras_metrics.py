"""Stateful Keras metrics over requests (each the mean of a per-request value).

Every class is a ``tf.keras.metrics.Mean`` whose ``update_state`` takes the model's outputs
rather than Keras' (y_true, y_pred) pair:

  CascadeRecall.update_state(labels, stage_scores, mask, sample_weight=None)
  StageRecall / NDCG / KendallTau .update_state(labels, scores, mask, sample_weight=None)

  labels: [batch, list_size] graded labels; scores: [batch, list_size];
  stage_scores: a sequence of [batch, list_size], first stage first; mask: [batch, list_size]
  0/1 (any dtype); sample_weight: optional [batch] request weights.

One averaging rule for all of them (``functions.requests_counted``): a request counts iff it
has at least one valid candidate; padding-only rows count for nothing, and a counted request
where a metric is degenerate (constant scores, no positive label) counts with the metric's
value there (0 for tau and NDCG), so a model cannot lift a mean by making requests undefined.
The values come from ``models.metrics.functions``, which the ``CascadeEvaluator`` also uses
(through ``update_cascade_metrics``): training logs and blessing figures are one computation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from models.metrics import functions


def _weights(mask: tf.Tensor, like: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
    weights = functions.requests_counted(mask, like)
    if sample_weight is not None:
        weights = weights * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return weights


@tf.keras.utils.register_keras_serializable(package="lcron")
class CascadeRecall(tf.keras.metrics.Mean):
    """Mean end-to-end Recall@gt_num@k1@k2... over requests (``functions.cascade_recall``)."""

    def __init__(
        self, ks: Sequence[int] = (30, 20), gt_num: int = 10, name: str | None = None, **kwargs: Any
    ) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.gt_num = int(gt_num)
        name = name or "recall_at_" + "_at_".join(str(v) for v in (self.gt_num, *self.ks))
        super().__init__(name=name, **kwargs)

    def update_state(  # type: ignore[override]
        self,
        labels: tf.Tensor,
        stage_scores: Sequence[tf.Tensor],
        mask: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> Any:
        values = functions.cascade_recall(stage_scores, labels, mask, self.ks, self.gt_num)
        return super().update_state(values, sample_weight=_weights(mask, labels, sample_weight))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ks": self.ks, "gt_num": self.gt_num}


@tf.keras.utils.register_keras_serializable(package="lcron")
class StageRecall(tf.keras.metrics.Mean):
    """Mean Recall@gt_num@k of one stage's scores over the whole list."""

    def __init__(self, k: int = 30, gt_num: int = 10, name: str | None = None, **kwargs: Any):
        self.k = int(k)
        self.gt_num = int(gt_num)
        super().__init__(name=name or f"recall_at_{self.gt_num}_at_{self.k}", **kwargs)

    def update_state(  # type: ignore[override]
        self,
        labels: tf.Tensor,
        scores: tf.Tensor,
        mask: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> Any:
        values = functions.stage_recall(scores, labels, mask, self.k, self.gt_num)
        return super().update_state(values, sample_weight=_weights(mask, labels, sample_weight))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k, "gt_num": self.gt_num}


@tf.keras.utils.register_keras_serializable(package="lcron")
class NDCG(tf.keras.metrics.Mean):
    """Mean NDCG@k (gain 2^label - 1, tie-averaged DCG) over requests."""

    def __init__(self, k: int = 10, name: str | None = None, **kwargs: Any) -> None:
        self.k = int(k)
        super().__init__(name=name or f"ndcg_at_{self.k}", **kwargs)

    def update_state(  # type: ignore[override]
        self,
        labels: tf.Tensor,
        scores: tf.Tensor,
        mask: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> Any:
        values = functions.ndcg(scores, labels, mask, self.k)
        return super().update_state(values, sample_weight=_weights(mask, labels, sample_weight))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


@tf.keras.utils.register_keras_serializable(package="lcron")
class KendallTau(tf.keras.metrics.Mean):
    """Mean Kendall's tau-b between scores and labels over requests."""

    def __init__(self, name: str = "kendall_tau", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(  # type: ignore[override]
        self,
        labels: tf.Tensor,
        scores: tf.Tensor,
        mask: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> Any:
        values = functions.kendall_tau(scores, labels, mask)
        return super().update_state(values, sample_weight=_weights(mask, labels, sample_weight))


def update_cascade_metrics(
    built: Mapping[str, tf.keras.metrics.Metric],
    labels: tf.Tensor,
    stage_scores: Mapping[str, tf.Tensor],
    mask: tf.Tensor,
) -> None:
    """Updates the metrics of ``models.metrics.from_config`` with one batch of requests.

    Args:
      built: role -> metric, as ``from_config`` returns (roles ``cascade_recall`` and
        ``<stage>_recall`` / ``<stage>_ndcg`` / ``<stage>_kendall_tau``).
      labels / mask: [batch, list_size].
      stage_scores: {stage name: [batch, list_size]} in cascade order, first stage first
        (the order the end-to-end recall applies the cut-offs in).
    """
    from models import metrics

    ordered = list(stage_scores.values())
    for role, metric in built.items():
        if role == metrics.CASCADE_ROLE:
            if len(ordered) != len(metric.ks):
                raise ValueError(
                    f"update_cascade_metrics: {len(ordered)} stages' scores for cut-offs "
                    f"{metric.ks}"
                )
            metric.update_state(labels, ordered, mask)
        else:
            metric.update_state(labels, stage_scores[metrics.role_stage(role)], mask)
