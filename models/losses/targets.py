"""Targets derived from the graded labels: the ground-truth set and hard top-k selections.

Labels (see ``models.features``): prerank_neg 0, coarse_neg 1, rank_neg 2,
rank_pos 3 + (10 - rank_index) / 10. The ground truth of a request is its ``gt_num`` valid items
with the largest labels. Ties are broken by position (the lower index wins, as
``tf.math.top_k`` does), so the selection is deterministic; padding is never selected.
"""

from __future__ import annotations

import tensorflow as tf


def top_k_indicator(scores: tf.Tensor, mask: tf.Tensor | None, k: int | tf.Tensor) -> tf.Tensor:
    """0/1 indicator of the top-``k`` valid items of each list.

    Args:
      scores: [batch, list_size] scores (larger is better).
      mask: [batch, list_size] 0/1 (any dtype) or bool; None means all valid.
      k: how many to keep; capped at the list size and, per request, at the valid count.

    Returns:
      [batch, list_size] float32: 1 for a kept item. Equal scores: the lower index is kept first.
    """
    scores = tf.cast(scores, tf.float32)
    valid = tf.ones_like(scores, tf.bool) if mask is None else tf.cast(mask, tf.bool)
    # Valid scores are clipped above -inf so that no valid item ties with padding.
    finite = tf.maximum(scores, tf.float32.min)
    ranked = tf.where(valid, finite, tf.fill(tf.shape(scores), -float("inf")))
    list_size = tf.shape(scores)[-1]
    k = tf.minimum(tf.cast(k, tf.int32), list_size)
    indices = tf.math.top_k(ranked, k=k, sorted=True).indices  # [batch, k]
    chosen = tf.reduce_sum(tf.one_hot(indices, list_size, dtype=tf.float32), axis=-2)
    return chosen * tf.cast(valid, tf.float32)


def ground_truth_indicator(
    labels: tf.Tensor, mask: tf.Tensor | None, gt_num: int | tf.Tensor = 10
) -> tf.Tensor:
    """y_i = 1 for the ``gt_num`` valid items with the largest labels, [batch, list_size] float32.

    This is the hard limit of the authors' near-hard NeuralSort of the labels: their labels are
    separated by at least 0.1 and sorted at temperature 1e-3, where the relaxed top-k is exact.
    """
    return top_k_indicator(labels, mask, gt_num)


def stage_names(num_stages: int) -> tuple[str, ...]:
    """Names used in logged loss terms: "retrieval", then "stage1".., then "ranking" last."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages == 1:
        return ("ranking",)
    middle = tuple(f"stage{s}" for s in range(1, num_stages - 1))
    return ("retrieval", *middle, "ranking")
