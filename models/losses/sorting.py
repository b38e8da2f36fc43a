"""Differentiable sorting: relaxed permutation matrices of a batch of score lists.

Both operators return ``P`` of shape [batch, list_size, list_size] with rows = ranks (rank 1 =
the largest score first) and columns = items. Every row of a valid rank is a probability
distribution over items (row-stochastic) and ``P`` tends to the hard sort as ``tau -> 0``.

Padding never wins a rank: with ``n`` valid items in a request, ranks ``1..n`` are computed
over the valid items only (masked items get a softmax logit of -1e9, i.e. probability 0, and are
left out of NeuralSort's ``sum_k |s_i - s_k|``), and the rows of ranks ``n+1..list_size`` are all
zero. So the top-left ``n x n`` block is exactly the operator applied to the valid items alone,
wherever they sit in the list, and a request with no valid item gives ``P = 0``.
"""

from __future__ import annotations

import tensorflow as tf

NEURAL_SORT = "neural_sort"
SOFT_SORT = "soft_sort"
SORT_OPS = (NEURAL_SORT, SOFT_SORT)

# Softmax logit of a masked item: exp(-1e9 - max) is exactly 0 in float32, and stays finite.
_MASKED_LOGIT = -1e9


def prepare_scores(
    scores: tf.Tensor, mask: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(scores, valid, num_valid): float32 scores with padding zeroed, the bool mask and the
    float number of valid items per request [batch]; shared by the dense and blocked paths."""
    # float32 throughout: half-precision logits would make the sort's softmax too coarse.
    scores = tf.cast(scores, tf.float32)
    valid = tf.ones_like(scores, dtype=tf.bool) if mask is None else tf.cast(mask, tf.bool)
    # Zero the padding so that whatever a padded position holds (inf, 1e30) cannot leak into
    # the arithmetic, or into the gradient through tf.where's unselected branch.
    scores = tf.where(valid, scores, tf.zeros_like(scores))
    num_valid = tf.reduce_sum(tf.cast(valid, scores.dtype), axis=-1)
    return scores, valid, num_valid


def _masked_row_softmax(
    logits: tf.Tensor, valid: tf.Tensor, num_valid: tf.Tensor, tau: float
) -> tf.Tensor:
    """Softmax over items (last axis) with padding columns and padding rank rows zeroed.

    Args:
      logits: [batch, list_size (ranks), list_size (items)] un-tempered logits.
      valid: [batch, list_size] bool item mask.
      num_valid: [batch] float number of valid items.
      tau: temperature (> 0).
    """
    logits = logits / tau
    logits = tf.where(valid[:, tf.newaxis, :], logits, tf.fill(tf.shape(logits), _MASKED_LOGIT))
    perm = tf.nn.softmax(logits, axis=-1)
    list_size = tf.shape(valid)[-1]
    rank = tf.cast(tf.range(list_size), perm.dtype)  # 0-based rank of each row
    row_valid = tf.cast(rank[tf.newaxis, :] < num_valid[:, tf.newaxis], perm.dtype)
    return perm * row_valid[:, :, tf.newaxis]


def neural_sort(scores: tf.Tensor, mask: tf.Tensor | None = None, tau: float = 1.0) -> tf.Tensor:
    """NeuralSort relaxed permutation matrix (Grover et al., ICLR 2019).

    ``P[j, i] = softmax_i(((n + 1 - 2j) s_i - sum_k |s_i - s_k|) / tau)`` for ranks j = 1..n,
    n the number of valid items (sum over valid k only).

    Args:
      scores: [batch, list_size] float scores, larger is better.
      mask: [batch, list_size] 0/1 (any dtype) or bool; None means all valid.
      tau: temperature; smaller is closer to the hard sort.

    Returns:
      [batch, list_size, list_size] float: rows = ranks (descending), columns = items.
    """
    scores, valid, num_valid = prepare_scores(scores, mask)
    valid_f = tf.cast(valid, scores.dtype)
    # sum_k m_k |s_i - s_k|: [batch, items]
    abs_diff = tf.abs(scores[:, :, tf.newaxis] - scores[:, tf.newaxis, :])
    spread = tf.reduce_sum(abs_diff * valid_f[:, tf.newaxis, :], axis=-1)
    list_size = tf.shape(scores)[-1]
    rank = tf.cast(tf.range(1, list_size + 1), scores.dtype)  # j = 1..list_size
    coef = num_valid[:, tf.newaxis] + 1.0 - 2.0 * rank[tf.newaxis, :]  # [batch, ranks]
    logits = coef[:, :, tf.newaxis] * scores[:, tf.newaxis, :] - spread[:, tf.newaxis, :]
    return _masked_row_softmax(logits, valid, num_valid, tau)


def soft_sort(scores: tf.Tensor, mask: tf.Tensor | None = None, tau: float = 1.0) -> tf.Tensor:
    """SoftSort relaxed permutation matrix (Prillo & Eisenschlos, ICML 2020).

    ``P[j, i] = softmax_i(-|sort(s)_j - s_i| / tau)`` with ``sort`` descending over valid items.

    Args:
      scores: [batch, list_size] float scores, larger is better.
      mask: [batch, list_size] 0/1 (any dtype) or bool; None means all valid.
      tau: temperature; smaller is closer to the hard sort.

    Returns:
      [batch, list_size, list_size] float: rows = ranks (descending), columns = items.
    """
    scores, valid, num_valid = prepare_scores(scores, mask)
    sorted_scores = sorted_valid_scores(scores, valid, num_valid)
    logits = -tf.abs(sorted_scores[:, :, tf.newaxis] - scores[:, tf.newaxis, :])
    return _masked_row_softmax(logits, valid, num_valid, tau)


def sorted_valid_scores(scores: tf.Tensor, valid: tf.Tensor, num_valid: tf.Tensor) -> tf.Tensor:
    """SoftSort's row anchors: the valid scores in descending order, then zeros.

    Args:
      scores: [batch, list_size] float32 scores with padding zeroed (``prepare_scores``).
      valid: [batch, list_size] bool mask.
      num_valid: [batch] float number of valid items.

    Returns:
      [batch, list_size]: entry j is the (j+1)-th largest valid score for j < num_valid, else 0
      (differentiable through ``tf.math.top_k``).
    """
    list_size = tf.shape(scores)[-1]
    # Push padding below every valid score for the sort; the values of padding ranks are
    # replaced by 0 right after (their rows are zeroed anyway).
    low = tf.stop_gradient(tf.reduce_min(scores, axis=-1, keepdims=True)) - 1.0
    sortable = tf.where(valid, scores, tf.broadcast_to(low, tf.shape(scores)))
    sorted_scores = tf.math.top_k(sortable, k=list_size, sorted=True).values
    rank = tf.range(list_size)
    rank_valid = tf.cast(rank[tf.newaxis, :], num_valid.dtype) < num_valid[:, tf.newaxis]
    return tf.where(rank_valid, sorted_scores, tf.zeros_like(sorted_scores))


def permutation_matrix(
    scores: tf.Tensor,
    mask: tf.Tensor | None = None,
    *,
    sort_op: str = NEURAL_SORT,
    tau: float = 1.0,
) -> tf.Tensor:
    """Dispatches to :func:`neural_sort` or :func:`soft_sort` by name."""
    if sort_op == NEURAL_SORT:
        return neural_sort(scores, mask, tau)
    if sort_op == SOFT_SORT:
        return soft_sort(scores, mask, tau)
    raise ValueError(f"sort_op must be one of {SORT_OPS}, got {sort_op!r}")
