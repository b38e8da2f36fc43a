"""Cascade metrics as plain TensorFlow functions: one value per request, shape [batch].

This is the one implementation of the cascade metrics: the Keras metrics
(``models.metrics.keras_metrics``, logged in training and by the experiments) and the
``CascadeEvaluator`` (which blesses models) both call these functions.

Inputs are [batch, list_size]: scores (larger is better), graded labels and a 0/1 mask (any
dtype; None: every item valid). Masked items are never kept, never ground truth, carry no gain.

**No value depends on list order.** Every selection with ties is taken in expectation under
uniform random tie-breaking, so a model that gives every candidate the same score scores
exactly chance level (end-to-end Recall@10@30@20 of a full list of 40 is 0.5), and permuting a
request's candidates changes nothing:

- ``expected_top_k``: a stage keeping its top k of a pool. Items strictly above the k-th
  largest score are kept (weight 1); the group tied at the boundary shares the remaining slots
  equally: each is kept with probability (k - n_above) / n_tied. For a pool of 0/1 items this
  is *exact*: the probability that the item is in the top k when ties are broken uniformly at
  random.
- ground truth (``ground_truth_weights``): the same selection over the labels, keeping
  ``gt_num``; when labels tie at the boundary (e.g. fewer than ``gt_num`` rank_pos items and
  several rank_neg items of label 2), each tied item is ground truth with the probability
  (gt_num - n_above) / n_tied, and the ground truth still weighs min(gt_num, n_valid) in all.
- ``cascade_selection``: stage s keeps its top ks[s] of what stage s-1 kept, composed on these
  keep weights: an item's pool weight is its keep probability upstream, and the boundary group's
  remaining slots are shared in proportion to pool weight (a group of pool mass m above which
  mass a lies keeps each member with probability w * clip((k - a) / m, 0, 1)). This is exact
  when no stage before the last has a tie that straddles its cut-off (the pool of every later
  stage is then a fixed set), and when every stage after the first is all-tied (a constant
  stage keeps k of its pool uniformly at random); in particular a constant-score cascade gets
  its exact expected recall. Otherwise (a tie at an upstream cut-off AND a later stage that
  separates the tied items) it is a mean-field approximation: the later stage sees the
  expected pool instead of averaging over the random pools. The kept weights always sum to
  min(k_1, ..., k_S, n_valid), as the hard cascade keeps that many.
- recall = sum(ground truth x kept) / sum(ground truth): the expected share of the ground truth
  that survives (label ties and score ties are broken independently, so the product of the
  two expectations is the expectation of the product).
- ``ndcg``: the expected DCG under random tie-breaking (McSherry & Najork, ECIR 2008: a tied
  group shares the average discount of the ranks it occupies), as the authors' evaluation
  computes it with scikit-learn's tie-averaged DCG.
- ``kendall_tau``: tau-b, symmetric in the pairs, hence order-free already.

Cost: every item is compared with every other ([batch, list_size, list_size]).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def valid_mask(mask: tf.Tensor | None, like: tf.Tensor) -> tf.Tensor:
    """[batch, list_size] bool: True for a real candidate."""
    return tf.ones_like(like, tf.bool) if mask is None else tf.cast(mask, tf.bool)


def requests_counted(mask: tf.Tensor | None, like: tf.Tensor) -> tf.Tensor:
    """[batch] float32: 1 for a request that counts in a mean over requests, else 0.

    The one averaging rule of every cascade metric: a request counts iff it has at least one
    valid candidate (its ground truth is then non-empty). Padding-only rows (no valid item) count
    for nothing. A counted request where a metric is degenerate counts with that metric's
    chance-level value (e.g. Kendall's tau 0 for constant scores), never drops out: a model
    cannot improve its mean by making requests undefined.
    """
    valid = valid_mask(mask, like)
    return tf.cast(tf.reduce_any(valid, axis=-1), tf.float32)


def _ordered(values: tf.Tensor) -> tf.Tensor:
    # NaN compares false with everything (itself included): rank it lowest, tied with other NaNs.
    values = tf.cast(values, tf.float32)
    return tf.where(tf.math.is_nan(values), -float("inf"), values)


def _above_and_tied(values: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per item i: sum of weights of items with a larger value, and with an equal value (i too)."""
    v = _ordered(values)
    other, me = v[:, tf.newaxis, :], v[:, :, tf.newaxis]  # [b, i, j]: item j vs item i
    w = weights[:, tf.newaxis, :]
    above = tf.reduce_sum(tf.where(other > me, w, 0.0), axis=-1)
    tied = tf.reduce_sum(tf.where(other == me, w, 0.0), axis=-1)
    return above, tied


def expected_top_k(scores: tf.Tensor, pool: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
    """Probability that each item is in the top ``k`` of the pool, ties broken at random.

    Args:
      scores: [batch, list_size], larger is better (NaN ranks lowest, tied with -inf).
      pool: [batch, list_size] in [0, 1]: 1 surely in the pool, 0 not (padding), a fraction an
        item the upstream stage kept with that probability.
      k: how many the stage keeps.

    Returns:
      [batch, list_size] float32 keep weights, each <= its pool weight, summing to
      min(k, sum(pool)) per request.
    """
    pool = tf.cast(pool, tf.float32)
    above, tied = _above_and_tied(scores, pool)
    share = tf.clip_by_value(tf.math.divide_no_nan(tf.cast(k, tf.float32) - above, tied), 0.0, 1.0)
    return pool * share


def ground_truth_weights(
    labels: tf.Tensor, mask: tf.Tensor | None, gt_num: int | tf.Tensor = 10
) -> tf.Tensor:
    """[batch, list_size] float32: probability of each item to be one of the ``gt_num`` valid
    items with the largest labels (1 or 0 unless labels tie at the boundary)."""
    return expected_top_k(labels, tf.cast(valid_mask(mask, labels), tf.float32), gt_num)


def cascade_selection(
    stage_scores: Sequence[tf.Tensor], mask: tf.Tensor | None, ks: Sequence[int]
) -> tf.Tensor:
    """[batch, list_size] float32: probability of each item to survive a cascade where stage s
    keeps its top ks[s] of what stage s-1 kept (stage 1: of the valid items).

    See the module docstring for when the composition is exact.
    """
    if len(stage_scores) != len(ks):
        raise ValueError(f"got {len(stage_scores)} stage scores but {len(ks)} cut-offs {tuple(ks)}")
    if not stage_scores:
        raise ValueError("cascade_selection needs at least one stage")
    kept = tf.cast(valid_mask(mask, stage_scores[0]), tf.float32)
    for scores, k in zip(stage_scores, ks, strict=True):
        kept = expected_top_k(scores, kept, k)
    return kept


def cascade_recall(
    stage_scores: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor | None,
    ks: Sequence[int] = (30, 20),
    gt_num: int = 10,
) -> tf.Tensor:
    """End-to-end Recall@gt_num@k1@k2...: expected share of the ground truth that survives.

    Args:
      stage_scores: one [batch, list_size] score tensor per stage, first stage first.
      labels: [batch, list_size] graded labels.
      mask: [batch, list_size] 0/1 (None: all valid).
      ks: per-stage cut-offs (the paper: 30 then 20).
      gt_num: size of the ground truth.

    Returns:
      [batch] float32; 0 for a request without valid items (not counted, see
      ``requests_counted``).
    """
    y = ground_truth_weights(labels, mask, gt_num)
    kept = cascade_selection(stage_scores, mask, ks)
    return tf.math.divide_no_nan(tf.reduce_sum(y * kept, axis=-1), tf.reduce_sum(y, axis=-1))


def stage_recall(
    scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, k: int = 30, gt_num: int = 10
) -> tf.Tensor:
    """Recall@gt_num@k of one stage over the whole list, [batch] float32."""
    return cascade_recall([scores], labels, mask, (k,), gt_num)


def _expected_dcg(order_by: tf.Tensor, gains: tf.Tensor, valid: tf.Tensor, k: int) -> tf.Tensor:
    """DCG@k of the ranking by ``order_by``, averaged over the orders of tied items."""
    valid_f = tf.cast(valid, tf.float32)
    above, tied = _above_and_tied(order_by, valid_f)
    list_size = tf.shape(order_by)[-1]
    ranks = tf.range(list_size + 1)
    # cumulative[m] = sum of the discounts of ranks 0..m-1 (rank r: 1 / log2(r + 2); 0 past k).
    discount = tf.where(
        ranks[:-1] < k, tf.math.log(2.0) / tf.math.log(tf.cast(ranks[:-1], tf.float32) + 2.0), 0.0
    )
    cumulative = tf.concat([[0.0], tf.cumsum(discount)], axis=0)
    first = tf.cast(tf.round(above), tf.int32)
    last = tf.cast(tf.round(above + tied), tf.int32)
    share = tf.math.divide_no_nan(
        tf.gather(cumulative, last) - tf.gather(cumulative, first), tied
    )  # the tied group's average discount
    return tf.reduce_sum(gains * share * valid_f, axis=-1)


def ndcg(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, k: int = 10) -> tf.Tensor:
    """NDCG@k with gain 2^label - 1 and discount 1 / log2(rank + 1), [batch] float32.

    The DCG of the scores is its expectation over random orders of tied scores (tie-averaged
    DCG); the ideal DCG sorts the valid labels. 0 when the ideal DCG is 0 (no valid item with a
    positive label).
    """
    labels = tf.cast(labels, tf.float32)
    valid = valid_mask(mask, labels)
    gains = tf.where(valid, tf.pow(2.0, labels) - 1.0, 0.0)
    ideal = _expected_dcg(labels, gains, valid, k)
    return tf.math.divide_no_nan(_expected_dcg(scores, gains, valid, k), ideal)


def kendall_tau(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Kendall's tau-b between scores and labels over the valid items, [batch] float32.

    tau_b = (C - D) / sqrt((n0 - n_labels) (n0 - n_scores)) over pairs of valid items, with
    n0 the number of pairs and n_x the pairs tied in x (labels have many ties: stage groups).
    0 when undefined (fewer than 2 valid items, or all labels or all scores tied): the value of
    an uninformative ranking.
    """
    valid_b = valid_mask(mask, scores)
    # Zero the padding so that inf/NaN there cannot turn the masked sums into NaN.
    scores = tf.where(valid_b, _ordered(scores), 0.0)
    labels = tf.where(valid_b, tf.cast(labels, tf.float32), 0.0)
    valid = tf.cast(valid_b, tf.float32)
    pair = valid[:, :, tf.newaxis] * valid[:, tf.newaxis, :]
    pair = pair * (1.0 - tf.eye(tf.shape(scores)[-1], batch_shape=[1]))  # i != j
    # Compare instead of subtracting: inf - inf would be NaN.
    sign_s = tf.cast(scores[:, :, tf.newaxis] > scores[:, tf.newaxis, :], tf.float32) - tf.cast(
        scores[:, :, tf.newaxis] < scores[:, tf.newaxis, :], tf.float32
    )
    sign_l = tf.sign(labels[:, :, tf.newaxis] - labels[:, tf.newaxis, :])
    # Every unordered pair is counted twice below (i, j and j, i); the factors cancel.
    concordance = tf.reduce_sum(sign_s * sign_l * pair, axis=[-2, -1])
    untied_s = tf.reduce_sum(tf.abs(sign_s) * pair, axis=[-2, -1])
    untied_l = tf.reduce_sum(tf.abs(sign_l) * pair, axis=[-2, -1])
    return tf.math.divide_no_nan(concordance, tf.sqrt(untied_s * untied_l))
