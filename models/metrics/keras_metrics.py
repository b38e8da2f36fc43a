"""Stateful Keras metrics over requests (each the mean of a per-request value).

Every class is a ``tf.keras.metrics.Mean`` whose ``update_state`` takes the model's outputs
rather than Keras' (y_true, y_pred) pair:

  CascadeRecall.update_state(labels, stage_scores, mask, sample_weight=None)
  StageRecall / NDCG / KendallTau .update_state(labels, scores, mask, sample_weight=None)

  labels: [batch, list_size] graded labels; scores: [batch, list_size];
  stage_scores: a sequence of [batch, list_size], first stage first; mask: [batch, list_size]
  0/1 (any dtype); sample_weight: optional [batch] request weights.

Requests where the metric is undefined (no ground truth, all-zero ideal DCG, fewer than two
valid items) get weight 0, so padding-only rows do not drag the mean down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.metrics import functions


def _weights(defined: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
    weights = tf.cast(defined, tf.float32)
    if sample_weight is not None:
        weights = weights * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return weights


def _num_valid(mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.cast(mask, tf.bool), tf.float32), axis=-1)


@tf.keras.utils.register_keras_serializable(package="lcron")
class CascadeRecall(tf.keras.metrics.Mean):
    """Mean end-to-end Recall@gt_num@k1@k2... over requests with at least one valid item."""

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
        weights = _weights(_num_valid(mask) > 0, sample_weight)
        return super().update_state(values, sample_weight=weights)

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
        weights = _weights(_num_valid(mask) > 0, sample_weight)
        return super().update_state(values, sample_weight=weights)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k, "gt_num": self.gt_num}


@tf.keras.utils.register_keras_serializable(package="lcron")
class NDCG(tf.keras.metrics.Mean):
    """Mean NDCG@k (gain 2^label - 1) over requests with a positive ideal DCG."""

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
        ideal = functions.ndcg(labels, labels, mask, self.k)  # 1 where defined, else 0
        return super().update_state(values, sample_weight=_weights(ideal > 0, sample_weight))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


@tf.keras.utils.register_keras_serializable(package="lcron")
class KendallTau(tf.keras.metrics.Mean):
    """Mean Kendall's tau-b between scores and labels over requests with >= 2 valid items."""

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
        weights = _weights(_num_valid(mask) >= 2, sample_weight)
        return super().update_state(values, sample_weight=weights)
