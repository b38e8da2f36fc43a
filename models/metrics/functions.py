"""Cascade metrics as plain TensorFlow functions: one value per request, shape [batch].

Inputs are [batch, list_size]: scores (larger is better), graded labels, and a 0/1 mask. The
ground truth of a request is its ``gt_num`` valid items with the largest labels. Every
selection (a stage's top-k, the ground truth, the ranking behind NDCG) breaks ties by position,
the lower index first, and never selects a masked item. ``models.metrics.numpy_metrics`` holds
NumPy twins of these functions that give the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from models.losses.targets import ground_truth_indicator, top_k_indicator


def _valid(mask: tf.Tensor | None, like: tf.Tensor) -> tf.Tensor:
    return tf.ones_like(like, tf.bool) if mask is None else tf.cast(mask, tf.bool)


def cascade_selection(
    stage_scores: Sequence[tf.Tensor], mask: tf.Tensor | None, ks: Sequence[int]
) -> tf.Tensor:
    """0/1 [batch, list_size]: what survives a cascade where stage s keeps its top ks[s].

    Stage 1 ranks the whole (valid) list, stage s > 1 ranks only what stage s-1 kept.
    """
    if len(stage_scores) != len(ks):
        raise ValueError(f"got {len(stage_scores)} stage scores but {len(ks)} cut-offs {tuple(ks)}")
    if not stage_scores:
        raise ValueError("cascade_selection needs at least one stage")
    kept = tf.cast(_valid(mask, stage_scores[0]), tf.float32)
    for scores, k in zip(stage_scores, ks, strict=True):
        kept = top_k_indicator(scores, kept, k)
    return kept


def cascade_recall(
    stage_scores: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor | None,
    ks: Sequence[int] = (30, 20),
    gt_num: int = 10,
) -> tf.Tensor:
    """End-to-end Recall@gt_num@k1@k2...: share of the ground truth that survives the cascade.

    Args:
      stage_scores: one [batch, list_size] score tensor per stage, first stage first.
      labels: [batch, list_size] graded labels.
      mask: [batch, list_size] 0/1 (None: all valid).
      ks: per-stage cut-offs (the paper: 30 then 20).
      gt_num: size of the ground truth.

    Returns:
      [batch] float32; 0 for a request without valid items.
    """
    y = ground_truth_indicator(labels, mask, gt_num)
    kept = cascade_selection(stage_scores, mask, ks)
    return tf.reduce_sum(y * kept, axis=-1) / tf.maximum(tf.reduce_sum(y, axis=-1), 1.0)


def stage_recall(
    scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, k: int = 30, gt_num: int = 10
) -> tf.Tensor:
    """Recall@gt_num@k of one stage over the whole list, [batch] float32."""
    return cascade_recall([scores], labels, mask, (k,), gt_num)


def ndcg(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, k: int = 10) -> tf.Tensor:
    """NDCG@k with gain 2^label - 1 and discount 1 / log2(rank + 1), [batch] float32.

    The ranking is the descending order of the scores over valid items (ties: lower index
    first); the ideal DCG sorts the valid labels. 0 when the ideal DCG is 0.
    """
    scores = tf.cast(scores, tf.float32)
    labels = tf.cast(labels, tf.float32)
    valid = _valid(mask, scores)
    list_size = tf.shape(scores)[-1]
    k = tf.minimum(k, list_size)
    discount = 1.0 / tf.math.log(tf.cast(tf.range(k), tf.float32) + 2.0) * tf.math.log(2.0)
    gains = tf.where(valid, tf.pow(2.0, labels) - 1.0, tf.zeros_like(labels))

    def dcg(order_by: tf.Tensor) -> tf.Tensor:
        ranked = tf.where(
            valid, tf.maximum(order_by, tf.float32.min), tf.fill(tf.shape(order_by), -float("inf"))
        )
        top = tf.math.top_k(ranked, k=k, sorted=True).indices
        return tf.reduce_sum(tf.gather(gains, top, batch_dims=1) * discount, axis=-1)

    ideal = dcg(labels)
    return tf.math.divide_no_nan(dcg(scores), ideal)


def kendall_tau(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Kendall's tau-b between scores and labels over the valid items, [batch] float32.

    tau_b = (C - D) / sqrt((n0 - n_labels) (n0 - n_scores)) over pairs of valid items, with
    n0 the number of pairs and n_x the pairs tied in x (labels have many ties: stage groups).
    0 when undefined (fewer than 2 valid items, or all labels or all scores tied).
    """
    valid_b = _valid(mask, scores)
    # Zero the padding so that inf/NaN there cannot turn the masked sums into NaN.
    scores = tf.where(valid_b, tf.cast(scores, tf.float32), 0.0)
    labels = tf.where(valid_b, tf.cast(labels, tf.float32), 0.0)
    valid = tf.cast(valid_b, tf.float32)
    pair = valid[:, :, tf.newaxis] * valid[:, tf.newaxis, :]
    pair = pair * (1.0 - tf.eye(tf.shape(scores)[-1], batch_shape=[1]))  # i != j
    sign_s = tf.sign(scores[:, :, tf.newaxis] - scores[:, tf.newaxis, :])
    sign_l = tf.sign(labels[:, :, tf.newaxis] - labels[:, tf.newaxis, :])
    # Every unordered pair is counted twice below (i, j and j, i); the factors cancel.
    concordance = tf.reduce_sum(sign_s * sign_l * pair, axis=[-2, -1])
    untied_s = tf.reduce_sum(tf.abs(sign_s) * pair, axis=[-2, -1])
    untied_l = tf.reduce_sum(tf.abs(sign_l) * pair, axis=[-2, -1])
    return tf.math.divide_no_nan(concordance, tf.sqrt(untied_s * untied_l))
