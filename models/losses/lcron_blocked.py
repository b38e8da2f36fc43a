"""Memory-linear LCRON: the top-k and remaining row sums of a relaxed sort, in blocks of rows.

LCRON needs, per item i of a stage, only two sums over the ranks j (rows) of the stage's
relaxed permutation matrix P ([batch, n, n], ``models.losses.sorting``):

  top_i  = sum_{j <= k} P[j, i]        (the top-k rows)
  rest_i = sum_{j > k}  P[j, i]        (the other rows; top_i + rest_i is the column sum)

``top_k_and_rest_sums`` returns both, [batch, n] each, with the same values and gradients as
summing the dense matrix's rows. The gradient of ``rest`` is that of the rows j > k (not of
c - top with c held constant): L_e2e's negative part q' = prod_s (1 - rest_s / c_s) needs it.
Rows are computed ``block_rows`` at a time (peak memory O(batch * block_rows * n), linear in n
for a fixed block) and the backward pass recomputes each block instead of keeping it, through
a hand-derived ``tf.custom_gradient``. A list that fits one block is one block, kept for the
backward pass (it is no bigger than a block).

Row j of P is a softmax over items, P[j, :] = softmax(z_j), so for an upstream gradient g on
that row's part (g = g^top for j <= k, g^rest otherwise) the logits' gradient is

  dz[j, i] = P[j, i] (g_i - r_j),   r_j = sum_i P[j, i] g_i,

and everything the scores need is a column sum of dz, possibly weighted per row: per block,
one product P g for r and one product (r, c r)^T P for the sums below.

NeuralSort (Grover et al. 2019): z[j, i] = (c_j s_i - A_i) / tau, c_j = n + 1 - 2j,
A_i = sum_k |s_i - s_k| (valid k). Rows differ only by the scalar c_j, so a block of logits is
one [B, 2] x [2, n] product of (c_j, 1) with (s_i / tau, -A_i / tau) (a batched matmul beats
TensorFlow's broadcasting arithmetic on CPU several times), and ``tf.nn.softmax`` (oneDNN)
normalises it. Under XLA (``fused``) the row maximum is known in closed form instead (row j
peaks at the j-th largest score, NeuralSort's defining property) and the products are
elementwise, which XLA fuses. With sums over the rows of a part (top or rest):

  ds_i (direct) = (1/tau) sum_j c_j dz[j, i] = (g_i sum_j c_j P[j, i] - sum_j c_j r_j P[j, i]) / tau
  dA_i          = -(1/tau) sum_j dz[j, i]    = -(g_i sum_j P[j, i] - sum_j r_j P[j, i]) / tau

(sum_j P[j, i] is the forward's output; sum_j c_j P[j, i] is kept from the forward too). A
and its gradient take one sort of the scores, O(n log n):

  A_i = s_i #{k: s_k < s_i} - sum_{s_k < s_i} s_k + sum_{s_k > s_i} s_k - s_i #{k: s_k > s_i}
  ds_l += dA_l (#{s_k < s_l} - #{s_k > s_l}) + sum_{s_i < s_l} dA_i - sum_{s_i > s_l} dA_i

with strict inequalities, which is exactly TensorFlow's subgradient of |x| (sign(0) = 0) that
the dense form differentiates, ties included. Sums over sorted prefixes run in float64. A list
that fits one block takes the pairwise form instead (sign(s_i - s_k) times two vectors).

SoftSort (Prillo & Eisenschlos 2020): z[j, i] = -|t_j - s_i| / tau with t the valid scores in
descending order (differentiable through ``tf.math.top_k``, outside the custom gradient); row j
peaks at 0. Its gradient needs sign(t_j - s_i) inside the sums, so a block takes a few more
products:  ds_i = (1/tau) sum_j dz[j, i] sgn(t_j - s_i),  dt_j = -(1/tau) sum_i dz[j, i] sgn(..).

Padding is handled as in ``sorting``: padded items get probability 0 in every row, rows of
ranks beyond a request's valid count are 0, padded scores get a zero gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from models.losses import sorting

#: Rows per block by default: at batch 1024 x list 1000, one [batch, 64, list] float32 block is
#: 256 MiB, and a block step holds about three of them.
DEFAULT_BLOCK_ROWS = 64

# Logit of a padded item (as in ``sorting``): exp(-1e9 - max) is exactly 0 in float32.
_MASKED_LOGIT = -1e9
# SoftSort: a padded item's scaled score sits this far from every anchor (exp(-1e30) = 0).
_FAR = 1e30


def top_k_and_rest_sums(
    scores: tf.Tensor,
    mask: tf.Tensor | None,
    k: int,
    *,
    sort_op: str = sorting.NEURAL_SORT,
    tau: float = 1.0,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    fused: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(top, rest): the sums of the first k rows and of the other rows of P, per item.

    Same values and gradients as ``P = sorting.permutation_matrix(scores, mask, ...)`` followed
    by ``reduce_sum(P[:, :k], -2)`` and ``reduce_sum(P[:, k:], -2)``, without materialising P.

    Args:
      scores: [batch, list_size] float scores, larger is better.
      mask: [batch, list_size] 0/1 (any dtype) or bool; None means all valid.
      k: rows in the top part (>= 0; k >= list_size makes ``rest`` zero).
      sort_op: "neural_sort" or "soft_sort".
      tau: temperature of the sort (> 0).
      block_rows: rows of P computed at once (memory per block: batch x block_rows x list_size).
      fused: the form for XLA (elementwise products and closed-form row maxima, which XLA
        fuses) instead of batched matmuls and oneDNN's softmax; same values.

    Returns:
      Two [batch, list_size] float32 tensors (``top + rest`` is P's column sum).
    """
    if sort_op not in sorting.SORT_OPS:
        raise ValueError(f"sort_op must be one of {sorting.SORT_OPS}, got {sort_op!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    scores, valid, num_valid = sorting.prepare_scores(scores, mask)
    ctx = _Context(scores, valid, num_valid, int(k), float(tau), int(block_rows), fused)
    if sort_op == sorting.NEURAL_SORT:
        return _neural_sort_sums(ctx, scores)
    anchors = sorting.sorted_valid_scores(scores, valid, num_valid)
    return _soft_sort_sums(ctx, scores, anchors)


class _Context:
    """Shapes, masks and the row split (top: ranks [0, k), rest: [k, n)) of one call."""

    def __init__(
        self,
        scores: tf.Tensor,
        valid: tf.Tensor,
        num_valid: tf.Tensor,
        k: int,
        tau: float,
        block: int,
        fused: bool,
    ) -> None:
        self.fused = fused
        self.valid = valid
        self.valid_f = tf.cast(valid, tf.float32)
        self.n = tf.cast(num_valid, tf.int32)  # [batch]
        self.k = k
        self.tau = tau
        self.batch = tf.shape(scores)[0]
        static = scores.shape[-1]
        self.list_size: int | tf.Tensor = static if static is not None else tf.shape(scores)[-1]
        # A list that fits one block is one block of exactly its size (no padding rows).
        self.single_block = static is not None and static <= block
        self.block = static if self.single_block else block

    def row_weights(self, j0: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """0-based ranks j [block] of a block, and [batch, block] 0/1 weights of its rows in
        the top part and in the rest (0 for ranks past a request's valid count)."""
        j = j0 + tf.range(self.block)
        ok = j[tf.newaxis, :] < self.n[:, tf.newaxis]  # also false past the list's end
        top = tf.cast(ok & (j < self.k)[tf.newaxis, :], tf.float32)
        rest = tf.cast(ok & (j >= self.k)[tf.newaxis, :], tf.float32)
        return j, top, rest

    def ones(self) -> tf.Tensor:
        return tf.ones([self.batch, self.block], tf.float32)

    def weighted_rows(self, e: tf.Tensor, weights: list[tf.Tensor | None]) -> list[tf.Tensor]:
        """[sum_i e[:, j, i] v[:, i] for v in weights] ([batch, block] each; None: v = 1)."""
        if self.fused:
            return [
                tf.reduce_sum(e if v is None else e * v[:, tf.newaxis, :], axis=-1) for v in weights
            ]
        # Without XLA, one batched matmul per block beats broadcasting products on CPU.
        # Vectors stacked on axis 1 (a contiguous copy; axis -1 interleaves, several times
        # slower) and the product taken as [k, list] x [list, block].
        stacked = tf.stack([tf.ones_like(e[:, 0]) if v is None else v for v in weights], 1)
        return tf.unstack(tf.matmul(stacked, e, transpose_b=True), axis=1)

    def weighted_cols(self, e: tf.Tensor, weights: list[tf.Tensor]) -> list[tf.Tensor]:
        """[sum_j e[:, j, i] v[:, j] for v in weights] ([batch, list] each)."""
        if self.fused:
            return [tf.reduce_sum(e * v[:, :, tf.newaxis], axis=-2) for v in weights]
        # [k, block] x [block, list] per request: no transposed copy of the block.
        return tf.unstack(tf.matmul(tf.stack(weights, axis=1), e), axis=1)

    def fold(
        self,
        body: Callable[[tf.Tensor, tuple[tf.Tensor, ...]], tuple[tuple[tf.Tensor, ...], Any]],
        init: tuple[tf.Tensor, ...],
        per_row: bool = False,
    ) -> tuple[tuple[tf.Tensor, ...], tf.Tensor | None]:
        """Folds ``body`` over the row blocks [j0, j0 + block) that cover ranks [0, list_size).

        ``body(j0, acc) -> (acc, rows)``; ``rows`` is [batch, block] when ``per_row`` (collected
        and returned as [batch, list_size]), else ignored. One block at a time: the loop runs
        its iterations in sequence (``parallel_iterations=1``), so one block is alive at once.
        """
        if self.single_block:
            return body(tf.constant(0), init)
        block = self.block
        num_blocks = (self.list_size + block - 1) // block
        rows_out = tf.TensorArray(tf.float32, size=num_blocks, element_shape=[None, block])

        def loop(i, acc, rows_out):
            acc, rows = body(i * block, acc)
            if per_row:
                rows_out = rows_out.write(i, rows)
            return i + 1, acc, rows_out

        _, acc, rows_out = tf.while_loop(
            lambda i, acc, rows_out: i < num_blocks,
            loop,
            (tf.constant(0), init, rows_out),
            parallel_iterations=1,
        )
        if not per_row:
            return acc, None
        rows = tf.reshape(tf.transpose(rows_out.stack(), [1, 0, 2]), [self.batch, -1])
        return acc, rows[:, : self.list_size]


# --- NeuralSort ----------------------------------------------------------------------------


class _Spread:
    """A_i = sum_k m_k |s_i - s_k| and what its gradient needs, from one sort of the scores."""

    def __init__(self, scores: tf.Tensor, ctx: _Context) -> None:
        valid = ctx.valid
        sortable = tf.where(valid, scores, tf.fill(tf.shape(scores), float("inf")))
        self.order = tf.argsort(sortable, axis=-1, stable=True)  # valid ascending, then padding
        ascending = tf.gather(sortable, self.order, batch_dims=1)
        # Valid items strictly below / at most s_i (padding sorts last as +inf: never counted).
        self.below = tf.searchsorted(ascending, scores, side="left")
        self.at_most = tf.searchsorted(ascending, scores, side="right")
        n = ctx.n[:, tf.newaxis]
        self.sign_count = tf.cast(self.below - (n - self.at_most), tf.float32)
        # Prefix sums in float64 of the scores centred on their valid mean (A is shift-free).
        s64 = tf.cast(scores, tf.float64)
        n64 = tf.cast(tf.maximum(ctx.n, 1), tf.float64)[:, tf.newaxis]
        mean = tf.reduce_sum(tf.where(valid, s64, 0.0), axis=-1, keepdims=True) / n64
        centred = s64 - mean
        prefix = _prefix_sums(tf.gather(tf.where(valid, centred, 0.0), self.order, batch_dims=1))
        below_sum = tf.gather(prefix, self.below, batch_dims=1)
        above_sum = prefix[:, -1:] - tf.gather(prefix, self.at_most, batch_dims=1)
        below = tf.cast(self.below, tf.float64)
        above = tf.cast(n - self.at_most, tf.float64)
        spread = centred * below - below_sum + above_sum - centred * above
        self.value = tf.cast(tf.where(valid, spread, 0.0), tf.float32)

    def backward(self, d_spread: tf.Tensor, valid_f: tf.Tensor) -> tf.Tensor:
        """d(loss)/ds from d(loss)/dA (d_spread zero at padding), [batch, list_size]."""
        prefix = _prefix_sums(tf.gather(tf.cast(d_spread, tf.float64), self.order, batch_dims=1))
        below_sum = tf.gather(prefix, self.below, batch_dims=1)
        above_sum = prefix[:, -1:] - tf.gather(prefix, self.at_most, batch_dims=1)
        mixed = tf.cast(below_sum - above_sum, tf.float32)
        return d_spread * self.sign_count + valid_f * mixed


class _PairwiseSpread:
    """A_i and its gradient from the [batch, n, n] sign matrix S[i, k] = sign(s_i - s_k): for a
    list that fits one block, where a few batched matmuls beat a sort and binary searches.

    Without XLA, A_i = sum_k m_k S[i, k] (x_i - x_k) = x_i (S m)_i - (S (m x))_i with x the
    scores centred on their valid mean (A is shift-free; centring keeps the difference of the
    two products accurate), so one product gives A and the counts its gradient needs. S comes
    from the scores themselves, so ties are exactly the dense form's.
    """

    def __init__(self, scores: tf.Tensor, ctx: _Context) -> None:
        self.fused = ctx.fused
        ones = tf.ones_like(scores)
        if ctx.fused:
            diff = scores[:, :, tf.newaxis] - scores[:, tf.newaxis, :]
            self.sign = tf.sign(diff)
            spread = tf.reduce_sum(tf.abs(diff) * ctx.valid_f[:, tf.newaxis, :], axis=-1)
            self.value = tf.where(ctx.valid, spread, 0.0)
            return
        # s_i - s_k as a K=2 matmul (exact: every product is by 1).
        diff = tf.matmul(tf.stack([scores, ones], 1), tf.stack([ones, -scores], 1), True)
        self.sign = tf.sign(diff)
        count = tf.maximum(tf.reduce_sum(ctx.valid_f, axis=-1, keepdims=True), 1.0)
        centred = scores - tf.reduce_sum(scores * ctx.valid_f, axis=-1, keepdims=True) / count
        vectors = tf.stack([ctx.valid_f, ctx.valid_f * centred], 1)
        self.sign_count, signed_sum = tf.unstack(
            tf.matmul(vectors, self.sign, transpose_b=True), axis=1
        )
        self.value = tf.where(ctx.valid, centred * self.sign_count - signed_sum, 0.0)

    def backward(self, d_spread: tf.Tensor, valid_f: tf.Tensor) -> tf.Tensor:
        # ds_l = dA_l sum_k m_k sgn(s_l - s_k) + m_l sum_i dA_i sgn(s_l - s_i)
        if self.fused:
            sign_count = tf.reduce_sum(self.sign * valid_f[:, tf.newaxis, :], axis=-1)
            mixed = tf.reduce_sum(self.sign * d_spread[:, tf.newaxis, :], axis=-1)
        else:
            sign_count = self.sign_count
            mixed = tf.linalg.matvec(self.sign, d_spread)
        return d_spread * sign_count + valid_f * mixed


#: Name scope of the hand-derived backward pass (the gradient machinery runs it outside the
#: forward's scope): profiles (``benchmarks/train_bench.py --profile``) attribute its ops by it.
GRAD_SCOPE = "lcron_blocked_grad"


def _scoped(grad_fn: Callable[..., Any]) -> Callable[..., Any]:
    def grad(*upstream: tf.Tensor) -> Any:
        with tf.name_scope(GRAD_SCOPE):
            return grad_fn(*upstream)

    return grad


def _prefix_sums(values: tf.Tensor) -> tf.Tensor:
    """[batch, m] -> [batch, m + 1]: sums of the first 0, 1, ..., m entries."""
    return tf.pad(tf.cumsum(values, axis=-1), [[0, 0], [1, 0]])


def _softmax_rows(logits: tf.Tensor, ctx: _Context, peak: tf.Tensor | None) -> tf.Tensor:
    """Row softmax of a block. Without XLA, ``tf.nn.softmax`` (a oneDNN kernel on CPU, several
    times faster than ``tf.exp``); under XLA, exp(z - peak) over its row sum with the known row
    maximum, which XLA fuses into the consumers."""
    if not ctx.fused:
        return tf.nn.softmax(logits, axis=-1)
    if peak is None:
        peak = tf.reduce_max(logits, axis=-1)
    e = tf.exp(logits - peak[:, :, tf.newaxis])
    # A valid row sums to >= 1 (its peak is exp(0)); a padding row (weight 0) may underflow to
    # 0 everywhere, and must not turn into 0 / 0.
    return e / tf.maximum(tf.reduce_sum(e, axis=-1, keepdims=True), 1e-30)


def _neural_sort_sums(ctx: _Context, scores: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    tau = ctx.tau

    @tf.custom_gradient
    def sums(scores):
        # One block: pairwise signs beat a sort and binary searches; else O(n log n).
        spread = _PairwiseSpread(scores, ctx) if ctx.single_block else _Spread(scores, ctx)
        u = scores / tau
        neg = tf.where(ctx.valid, -spread.value / tau, _MASKED_LOGIT)
        items = tf.stack([u, neg], axis=1)  # [batch, 2, list]
        if ctx.fused and not ctx.single_block:
            # Row j (0-based) peaks at the (j+1)-th largest valid item: ascending position n-1-j.
            u_asc = tf.gather(u, spread.order, batch_dims=1)
            neg_asc = tf.gather(neg, spread.order, batch_dims=1)
            last = ctx.list_size - 1
            neg_max = tf.reduce_max(neg, axis=-1, keepdims=True)
        kept = {}  # a list that fits one block keeps it for the backward pass

        def block_probs(j0):
            """P of a block [batch, block, list] (every row a softmax), c_j, row weights."""
            if "block" in kept:
                return kept["block"]
            j, top, rest = ctx.row_weights(j0)
            # Rows past the valid count get c = 0, logits -A_i / tau (finite) and weight 0.
            coef = (top + rest) * tf.cast(ctx.n[:, tf.newaxis] - 1 - 2 * j, tf.float32)
            if not ctx.fused:
                rows = tf.stack([coef, ctx.ones()], axis=1)  # [batch, 2, block]
                logits = tf.matmul(rows, items, transpose_a=True)
                return _softmax_rows(logits, ctx, None), coef, top, rest
            logits = coef[:, :, tf.newaxis] * u[:, tf.newaxis, :] + neg[:, tf.newaxis, :]
            if ctx.single_block:  # no sort: XLA fuses the row maximum
                return _softmax_rows(logits, ctx, None), coef, top, rest
            peak_at = tf.clip_by_value(ctx.n[:, tf.newaxis] - 1 - j[tf.newaxis, :], 0, last)
            peak = coef * tf.gather(u_asc, peak_at, batch_dims=1)
            # Rows past the valid count (c = 0) peak at max_i -A_i / tau.
            peak = tf.where(
                top + rest > 0, peak + tf.gather(neg_asc, peak_at, batch_dims=1), neg_max
            )
            return _softmax_rows(logits, ctx, peak), coef, top, rest

        def forward(j0, acc):
            block = block_probs(j0)
            if ctx.single_block:
                kept["block"] = block
            probs, coef, top, rest = block
            cols = ctx.weighted_cols(probs, [top, coef * top, rest, coef * rest])
            return tuple(a + c for a, c in zip(acc, cols, strict=True)), None

        zero = tf.zeros_like(scores)
        (top_sum, top_coef, rest_sum, rest_coef), _ = ctx.fold(forward, (zero,) * 4)

        def grad(d_top, d_rest):
            d_top = tf.zeros_like(scores) if d_top is None else d_top
            d_rest = tf.zeros_like(scores) if d_rest is None else d_rest

            def backward(j0, acc):
                probs, coef, top, rest = block_probs(j0)
                # r_j = sum_i P[j, i] g_i with g the upstream gradient of j's part.
                r_top, r_rest = ctx.weighted_rows(probs, [d_top, d_rest])
                wr = top * r_top + rest * r_rest
                p_r, p_cr = ctx.weighted_cols(probs, [wr, coef * wr])
                return (acc[0] + p_r, acc[1] + p_cr), None

            (p_r, p_cr), _ = ctx.fold(backward, (zero, zero))
            # sum_j dz[j, i] and sum_j c_j dz[j, i], dz[j, i] = P[j, i] (g_i - r_j).
            dz = d_top * top_sum + d_rest * rest_sum - p_r
            coef_dz = d_top * top_coef + d_rest * rest_coef - p_cr
            d_spread = -dz / tau * ctx.valid_f
            return (coef_dz / tau + spread.backward(d_spread, ctx.valid_f)) * ctx.valid_f

        return (top_sum, rest_sum), _scoped(grad)

    return sums(scores)


# --- SoftSort ------------------------------------------------------------------------------


def _soft_sort_sums(
    ctx: _Context, scores: tf.Tensor, anchors: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    tau = ctx.tau

    @tf.custom_gradient
    def sums(scores, anchors):
        # Scaled scores; a padded item sits _FAR from every anchor, so its probability is 0.
        items = tf.where(ctx.valid, scores / tau, _FAR)
        items_2 = tf.stack([tf.ones_like(items), -items], axis=1)  # [batch, 2, list]
        # Anchors read past the list's end belong to padding rows (weight 0).
        anchors_padded = tf.pad(anchors / tau, [[0, 0], [0, ctx.block]])
        kept = {}

        def block_probs(j0):
            """P, t_j / tau - s_i / tau of a block [batch, block, list], row weights."""
            if "block" in kept:
                return kept["block"]
            _, top, rest = ctx.row_weights(j0)
            t = tf.slice(anchors_padded, [0, j0], [-1, ctx.block])
            if ctx.fused:
                diff = t[:, :, tf.newaxis] - items[:, tf.newaxis, :]
            else:  # a K=2 matmul beats TensorFlow's broadcasting subtraction on CPU
                anchors_2 = tf.stack([t, tf.ones_like(t)], axis=1)  # [batch, 2, block]
                diff = tf.matmul(anchors_2, items_2, transpose_a=True)
            # Row j peaks at 0 (the item whose score is t_j).
            probs = _softmax_rows(-tf.abs(diff), ctx, tf.zeros_like(t))
            return probs, diff, top, rest

        def forward(j0, acc):
            block = block_probs(j0)
            if ctx.single_block:
                kept["block"] = block
            probs, _, top, rest = block
            cols = ctx.weighted_cols(probs, [top, rest])
            return (acc[0] + cols[0], acc[1] + cols[1]), None

        zero = tf.zeros_like(scores)
        (top_sum, rest_sum), _ = ctx.fold(forward, (zero, zero))

        def grad(d_top, d_rest):
            d_top = tf.zeros_like(scores) if d_top is None else d_top
            d_rest = tf.zeros_like(scores) if d_rest is None else d_rest

            def backward(j0, acc):
                probs, diff, top, rest = block_probs(j0)
                r_top, r_rest = ctx.weighted_rows(probs, [d_top, d_rest])
                r = top * r_top + rest * r_rest
                # dz[j, i] = P[j, i] (g_i - r_j) on valid rows; dz/ds_i = sgn(diff) / tau.
                f = tf.sign(diff) * probs
                f_top, f_rest, f_r = ctx.weighted_cols(f, [top, rest, r])
                f_gtop, f_grest, f_1 = ctx.weighted_rows(f, [d_top, d_rest, None])
                d_rows = -(top * f_gtop + rest * f_grest - r * f_1) / tau
                return (acc[0] + (d_top * f_top + d_rest * f_rest - f_r) / tau,), d_rows

            (d_scores,), d_anchors = ctx.fold(backward, (zero,), per_row=True)
            return d_scores * ctx.valid_f, d_anchors

        return (top_sum, rest_sum), _scoped(grad)

    return sums(scores, anchors)
