"""LCRON's loss terms as plain functions over tensors (Wang et al., ICML 2025, arXiv 2503.09492).

Notation, per request (shapes [batch, list_size] unless said otherwise):
  P_s     relaxed permutation matrix of stage s's logits, [batch, list_size, list_size]
          (``models.losses.sorting``; padding never wins a rank), rows = ranks.
  c_s,i   = sum_j P_s[j, i], the column sum, held constant (``tf.stop_gradient``).
  p_s(i)  = sum_{j<=k_s} P_s[j, i] / (c_s,i + 1e-6)   stage s keeps i in its top-k_s.
  r_s(i)  = sum_{j>k_s}  P_s[j, i] / (c_s,i + 1e-6)   stage s drops i (1 - p_s(i) in value).
  y_i     = 1 for the gt_num valid items with the largest labels, m_i the 0/1 mask.

  L_single,s = mean_b [n_b > k_s] mean_i m_i (-y_i log(p_s(i) + eps) - (1-y_i) log(r_s(i) + eps))
  L_e2e      = mean_b mean_i m_i (-y_i log(q_i + eps) - (1 - y_i) log(1 - q'_i + eps))
  with q_i = prod_s p_s(i) (the paper's lower bound of the probability that i survives the
  cascade, eq. 5) and q'_i = prod_s (1 - r_s(i)).

q' equals q in value but not in gradient (c is held constant and the columns of P are not
normalised, so d(1 - r)/dP differs from dp/dP); the authors' code computes the negative part this
way and the paper's numbers come from it, so we do too. "mean_i" is over the list axis
(padding counts as a zero term), as in the authors' code; eps = 1e-6.

The authors use k_s = gt_num for every stage inside these terms (not the serving cut-offs 30
and 20); ``ks`` makes it per stage.

Two implementations give the same values and gradients (``impl``, ``LossConfig.lcron_impl``):
"dense" builds each P_s ([batch, n, n], memory O(batch n^2)) and lets TensorFlow differentiate;
"blocked" (``lcron_blocked``) computes only the two row sums p and r need, in blocks of rows,
with a hand-derived gradient (memory O(batch n) beyond one block). "auto" picks the fastest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses import lcron_blocked, sorting, targets
from models.losses.base import CascadeLoss

EPS = 1e-6


DENSE = "dense"
BLOCKED = "blocked"
DENSE_XLA = "dense_xla"
BLOCKED_XLA = "blocked_xla"
AUTO = "auto"
#: How LCRON computes its terms (``LossConfig.lcron_impl``). All give the same values and
#: gradients; they differ in time and memory (``benchmarks/loss_bench.py``):
#:   dense        today's form: each stage's [batch, n, n] permutation matrix, autodiff.
#:   blocked      ``lcron_blocked``: row blocks, hand-derived gradient, memory linear in n.
#:   *_xla        the same under XLA (``tf.function(jit_compile=True)``).
#:   auto         ``resolve_impl``: the fastest measured at the list size.
IMPLS = (AUTO, DENSE, BLOCKED, DENSE_XLA, BLOCKED_XLA)


def resolve_impl(impl: str, list_size: int | None) -> str:
    """The implementation ``impl`` names; for "auto", the fastest at ``list_size``.

    "auto" is "blocked" at every list size: in ``benchmarks/loss_bench.py`` (batch 1024, CPU)
    it is the fastest path at lists 40, 200 and 1000, and XLA makes neither path faster on CPU
    (TensorFlow 2.15's XLA CPU backend sorts, gathers and runs batched matmuls slowly), while
    the blocked path's memory is linear in the list size. A list size unknown at trace time
    gets it too.
    """
    if impl not in IMPLS:
        raise ValueError(f"lcron_impl must be one of {IMPLS}, got {impl!r}")
    if impl != AUTO:
        return impl
    del list_size  # one path wins at every size measured; the argument keeps the choice local
    return BLOCKED


def keep_and_drop_probabilities(perm: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(p, r): a stage's probability to keep each item in its top-k, and to drop it.

    Args:
      perm: [batch, list_size, list_size] relaxed permutation matrix, rows = ranks.
      k: the stage's cut-off.

    Returns:
      Two [batch, list_size] tensors: ``sum_{j<=k} P[j, i] / (c_i + eps)`` and
      ``sum_{j>k} P[j, i] / (c_i + eps)`` with ``c_i = sum_j P[j, i]`` held constant.
    """
    column_sum = tf.stop_gradient(tf.reduce_sum(perm, axis=-2))
    denom = column_sum + EPS
    keep = tf.reduce_sum(perm[:, :k, :], axis=-2) / denom
    drop = tf.reduce_sum(perm[:, k:, :], axis=-2) / denom
    return keep, drop


def keep_and_drop_from_scores(
    scores: tf.Tensor,
    mask: tf.Tensor | None,
    k: int,
    *,
    sort_op: str = sorting.NEURAL_SORT,
    tau: float = 50.0,
    impl: str = DENSE,
    block_rows: int = lcron_blocked.DEFAULT_BLOCK_ROWS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(p, r) of :func:`keep_and_drop_probabilities` straight from a stage's scores.

    ``impl`` "dense" builds the permutation matrix; "blocked" (or "blocked_xla", the same
    function: XLA is applied by the caller) sums its rows in blocks (``lcron_blocked``), with
    the same values and gradients and memory linear in the list size.

    Args:
      scores: [batch, list_size] the stage's logits.
      mask: [batch, list_size] 0/1, or None.
      k: the stage's cut-off.
      sort_op / tau: the differentiable sort.
      impl: "dense", "blocked", "dense_xla" or "blocked_xla".
      block_rows: rows per block of the blocked path.

    Returns:
      Two [batch, list_size] float32 tensors.
    """
    if impl in (DENSE, DENSE_XLA):
        perm = sorting.permutation_matrix(scores, mask, sort_op=sort_op, tau=tau)
        return keep_and_drop_probabilities(perm, k)
    if impl not in (BLOCKED, BLOCKED_XLA):
        raise ValueError(f"impl must be one of {IMPLS[1:]}, got {impl!r}")
    top, rest = lcron_blocked.top_k_and_rest_sums(
        scores,
        mask,
        k,
        sort_op=sort_op,
        tau=tau,
        block_rows=block_rows,
        # Under XLA, elementwise products and reductions fuse; without it, small matmuls win.
        fused=impl == BLOCKED_XLA,
    )
    # top + rest is the column sum c; held constant as in the dense form.
    denom = tf.stop_gradient(top + rest) + EPS
    return top / denom, rest / denom


def _prepare(labels: tf.Tensor, mask: tf.Tensor, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
    mask_f = tf.cast(mask, dtype)
    return tf.cast(labels, dtype), mask_f


PER_ITEM = "per_item"
PER_TIED_RANK = "per_tied_rank"
#: How L_single weighs each item's keep / drop cross-entropy (``LossConfig.lcron_single_weights``):
#:   per_item       y_i and 1 - y_i (the two-stage code, two_stage/lcron.py, whose label matrix
#:                  is the soft sort of the labels: a tied group's rows share one unit);
#:   per_tied_rank  the number of ground-truth ranks (< gt_num) and of other ranks (>= gt_num)
#:                  that item i's group of tied labels spans (the three-stage code,
#:                  three_stage/lcron.py, thresholds its label matrix before use: every member
#:                  of a tied group of m labels gets a 1 in each of the group's m rows, so a
#:                  negative of a full group of 10 weighs 10). Equal when no label ties.
SINGLE_WEIGHTS = (PER_ITEM, PER_TIED_RANK)


def tied_rank_weights(
    labels: tf.Tensor, mask: tf.Tensor, gt_num: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(up, down), [batch, list_size]: the ranks < gt_num and >= gt_num that each valid item's
    group of tied labels spans (the three-stage code's thresholded label matrix, column sums of
    its first gt_num rows and of the rest). Padding gets 0.

    An item with a_i valid items labelled above it and t_i valid items tied with it (itself
    included) occupies ranks [a_i, a_i + t_i): up_i = |[a_i, a_i + t_i) ∩ [0, gt_num)|,
    down_i = |[a_i, a_i + t_i) ∩ [gt_num, n)|.
    """
    valid = tf.cast(mask, tf.float32)
    me, other = labels[:, :, tf.newaxis], labels[:, tf.newaxis, :]
    w = valid[:, tf.newaxis, :]
    above = tf.reduce_sum(tf.where(other > me, w, 0.0), axis=-1)
    end = above + tf.reduce_sum(tf.where(other == me, w, 0.0), axis=-1)
    gt = float(gt_num)
    up = tf.maximum(tf.minimum(end, gt) - above, 0.0) * valid
    down = tf.maximum(end - tf.maximum(above, gt), 0.0) * valid
    return up, down


def _single_stage_from_probabilities(
    keep: tf.Tensor,
    drop: tf.Tensor,
    ground_truth: tf.Tensor,
    mask: tf.Tensor,
    k: int,
    weights: tuple[tf.Tensor, tf.Tensor] | None = None,
) -> tf.Tensor:
    up, down = (ground_truth, 1.0 - ground_truth) if weights is None else weights
    per_item = -tf.math.log(keep + EPS) * up - tf.math.log(drop + EPS) * down
    per_request = tf.reduce_mean(per_item * mask, axis=-1)
    enough = tf.cast(tf.reduce_sum(mask, axis=-1) > float(k), per_request.dtype)
    return tf.reduce_mean(per_request * enough)


def _end_to_end_from_probabilities(
    keep_drop: Sequence[tuple[tf.Tensor, tf.Tensor]], ground_truth: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    q = 1.0
    q_neg = 1.0
    for keep, drop in keep_drop:
        q = q * keep
        q_neg = q_neg * (1.0 - drop)
    # 1 - q' >= 0 up to rounding; the clip keeps log's argument positive for any rounding.
    per_item = -tf.math.log(q + EPS) * ground_truth - tf.math.log(
        tf.maximum(1.0 - q_neg, 0.0) + EPS
    ) * (1.0 - ground_truth)
    return tf.reduce_mean(tf.reduce_mean(per_item * mask, axis=-1))


def single_stage_loss(
    perm: tf.Tensor, ground_truth: tf.Tensor, mask: tf.Tensor, k: int
) -> tf.Tensor:
    """L_single of one stage (scalar): relaxed top-k cross-entropy against the ground truth.

    Args:
      perm: [batch, list_size, list_size] the stage's relaxed permutation matrix.
      ground_truth: [batch, list_size] 0/1 y.
      mask: [batch, list_size] 0/1 float.
      k: the stage's k; requests with no more than k valid items contribute 0.
    """
    keep, drop = keep_and_drop_probabilities(perm, k)
    return _single_stage_from_probabilities(keep, drop, ground_truth, mask, k)


def end_to_end_loss(
    perms: Sequence[tf.Tensor], ground_truth: tf.Tensor, mask: tf.Tensor, ks: Sequence[int]
) -> tf.Tensor:
    """L_e2e (scalar): cross-entropy of the cascade's survival lower bound against y.

    Args:
      perms: one [batch, list_size, list_size] permutation matrix per stage, first stage first.
      ground_truth: [batch, list_size] 0/1 y.
      mask: [batch, list_size] 0/1 float.
      ks: one k per stage.
    """
    keep_drop = [keep_and_drop_probabilities(p, k) for p, k in zip(perms, ks, strict=True)]
    return _end_to_end_from_probabilities(keep_drop, ground_truth, mask)


def survival_lower_bound_from_perms(perms: Sequence[tf.Tensor], ks: Sequence[int]) -> tf.Tensor:
    """q_i = prod_s p_s(i), [batch, list_size], from one permutation matrix per stage.

    With exact top-k probabilities (e.g. the expected permutation matrix of a Plackett-Luce
    model) this is the paper's lower bound of the probability that i survives the cascade
    (eq. 5): being in stage s's top-k_s of the whole list implies being in its top-k_s of what
    reaches it.
    """
    q = 1.0
    for perm, k in zip(perms, ks, strict=True):
        q = q * keep_and_drop_probabilities(perm, k)[0]
    return q


def survival_lower_bound(
    stage_logits: Sequence[tf.Tensor],
    mask: tf.Tensor,
    ks: Sequence[int],
    *,
    sort_op: str = sorting.NEURAL_SORT,
    tau: float = 50.0,
) -> tf.Tensor:
    """q_i of L_e2e's positive part, [batch, list_size], from the stages' logits."""
    mask = tf.cast(mask, tf.float32)
    perms = [sorting.permutation_matrix(s, mask, sort_op=sort_op, tau=tau) for s in stage_logits]
    return survival_lower_bound_from_perms(perms, ks) * mask


def lcron_cascade_terms(
    stage_logits: Sequence[tf.Tensor],
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    gt_num: int = 10,
    ks: Sequence[int] | None = None,
    sort_op: str = sorting.NEURAL_SORT,
    tau: float = 50.0,
    impl: str = DENSE,
    block_rows: int = lcron_blocked.DEFAULT_BLOCK_ROWS,
    single_weights: str = PER_ITEM,
) -> dict[str, tf.Tensor]:
    """LCRON's terms for a cascade of any number of stages.

    Args:
      stage_logits: one [batch, list_size] float tensor per stage, first (retrieval) first.
      labels: [batch, list_size] graded labels (ground truth = the gt_num largest).
      mask: [batch, list_size] 0/1, any numeric dtype.
      gt_num: size of the ground-truth set.
      ks: per-stage k inside the terms; None means gt_num for every stage (the authors').
      sort_op: "neural_sort" or "soft_sort".
      tau: temperature of the sort on the logits.
      impl: how to compute the stages' top-k probabilities (``IMPLS``; "auto" resolves by the
        static list size). The "_xla" variants compute the same function here; ``LcronLoss``
        compiles it.
      block_rows: rows per block of the blocked path.
      single_weights: L_single's item weights, "per_item" (the two-stage code) or
        "per_tied_rank" (the three-stage code; ``SINGLE_WEIGHTS``).

    Returns:
      {"l_e2e": scalar, "l_single_<stage name>": scalar per stage}; names from
      ``targets.stage_names`` ("retrieval", ..., "ranking").
    """
    if ks is None:
        ks = (gt_num,) * len(stage_logits)
    if len(ks) != len(stage_logits):
        raise ValueError(f"got {len(stage_logits)} stages but {len(ks)} per-stage k: {tuple(ks)}")
    stage_logits = [tf.cast(s, tf.float32) for s in stage_logits]
    labels, mask_f = _prepare(labels, mask, tf.float32)
    impl = resolve_impl(impl, stage_logits[0].shape[-1])
    if single_weights not in SINGLE_WEIGHTS:
        raise ValueError(f"single_weights must be one of {SINGLE_WEIGHTS}, got {single_weights!r}")
    y = targets.ground_truth_indicator(labels, mask_f, gt_num)
    weights = None
    if single_weights == PER_TIED_RANK:
        weights = tied_rank_weights(labels, mask_f, gt_num)
    # One call per stage: the two stages' ops are independent, so they run side by side.
    keep_drop = [
        keep_and_drop_from_scores(
            s, mask_f, k, sort_op=sort_op, tau=tau, impl=impl, block_rows=block_rows
        )
        for s, k in zip(stage_logits, ks, strict=True)
    ]
    terms = {"l_e2e": _end_to_end_from_probabilities(keep_drop, y, mask_f)}
    names = targets.stage_names(len(keep_drop))
    for name, (keep, drop), k in zip(names, keep_drop, ks, strict=True):
        terms[f"l_single_{name}"] = _single_stage_from_probabilities(
            keep, drop, y, mask_f, k, weights
        )
    return terms


def lcron_loss_terms(
    retrieval_logits: tf.Tensor,
    ranking_logits: tf.Tensor,
    labels: tf.Tensor,
    mask: tf.Tensor,
    *,
    gt_num: int = 10,
    sort_op: str = sorting.NEURAL_SORT,
    tau: float = 50.0,
    impl: str = DENSE,
) -> dict[str, tf.Tensor]:
    """LCRON's terms for the two-stage cascade (k = gt_num in both stages, the authors' choice).

    Args:
      retrieval_logits: [batch, list_size] first-stage logits.
      ranking_logits: [batch, list_size] second-stage logits.
      labels: [batch, list_size] graded labels.
      mask: [batch, list_size] 0/1, any numeric dtype.
      gt_num: size of the ground-truth set (and k of both stages).
      sort_op: "neural_sort" or "soft_sort".
      tau: temperature of the sort on the logits.
      impl: "dense", "blocked", ... (see ``lcron_cascade_terms``).

    Returns:
      {"l_single_retrieval", "l_single_ranking", "l_e2e"}: scalar float32 tensors.

    Example:
      >>> terms = lcron_loss_terms(tf.random.normal([4, 40]), tf.random.normal([4, 40]),
      ...                          labels, tf.ones([4, 40]))
      >>> total = terms["l_e2e"] + terms["l_single_retrieval"] + terms["l_single_ranking"]
    """
    return lcron_cascade_terms(
        [retrieval_logits, ranking_logits],
        labels,
        mask,
        gt_num=gt_num,
        sort_op=sort_op,
        tau=tau,
        impl=impl,
    )


# The terms compiled with XLA, for the "_xla" paths (one trace per shape and setting). Inside a
# Keras train step it becomes one XLA cluster, forward and backward.
_xla_cascade_terms = tf.function(lcron_cascade_terms, jit_compile=True)

UWL = "uwl"
FIXED = "fixed"


@tf.keras.utils.register_keras_serializable(package="lcron")
class LcronLoss(CascadeLoss):
    """LCRON: L_e2e plus per-stage L_single, combined with uncertainty weights.

    Total (paper eq. 9, Kendall et al. 2018 uncertainty weighting):
      loss = L_e2e + sum_s (0.5 / w_s^2) L_single,s + sum_s log |w_s|
    with trainable scalars w_s initialised to 1 (``log |w|`` is ``log w`` for w > 0 and keeps
    the term finite if an optimiser step makes w negative). ``weighting="fixed"`` uses
    ``loss = L_e2e + sum_s fixed_weights[s] * L_single,s`` instead. ``use_e2e`` / ``use_single``
    switch the terms off for ablations (the authors' "w/o L_e2e", "w/o L_single").

    Args:
      num_stages: stages in the cascade (2: retrieval, ranking).
      gt_num: size of the ground-truth set.
      sort_op: "neural_sort" (authors' default) or "soft_sort".
      tau: sort temperature on the logits (authors: 50).
      stage_top_k: per-stage k inside the terms; None means gt_num everywhere.
      use_e2e: include L_e2e.
      use_single: include the L_single terms.
      weighting: "uwl" or "fixed".
      fixed_weights: per-stage L_single weights for "fixed".
      impl: how the stages' top-k probabilities are computed (``IMPLS``): "dense", "blocked",
        "dense_xla", "blocked_xla" (compiled with XLA) or "auto" (``resolve_impl`` at the
        list size of the first call). Same values and gradients.
      block_rows: rows per block of the blocked path.
      single_weights: L_single's item weights (``SINGLE_WEIGHTS``): "per_item" (the authors'
        two-stage code) or "per_tied_rank" (their three-stage code); ``models.losses.get``
        picks the authors' code of the cascade's depth by default.

    Returned terms: "loss", "l_e2e", "l_single_<stage>", and "uwl_w_<stage>" under "uwl".
    """

    method = "lcron"

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        sort_op: str = sorting.NEURAL_SORT,
        tau: float = 50.0,
        stage_top_k: Sequence[int] | None = None,
        use_e2e: bool = True,
        use_single: bool = True,
        weighting: str = UWL,
        fixed_weights: Sequence[float] = (1.0, 1.0),
        impl: str = AUTO,
        block_rows: int = lcron_blocked.DEFAULT_BLOCK_ROWS,
        single_weights: str = PER_ITEM,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages=num_stages, gt_num=gt_num, **kwargs)
        if single_weights not in SINGLE_WEIGHTS:
            raise ValueError(
                f"LcronLoss: single_weights must be one of {SINGLE_WEIGHTS}, got {single_weights!r}"
            )
        self.single_weights = single_weights
        if sort_op not in sorting.SORT_OPS:
            raise ValueError(
                f"LcronLoss: sort_op must be one of {sorting.SORT_OPS}, got {sort_op!r}"
            )
        if tau <= 0:
            raise ValueError(f"LcronLoss: tau must be > 0, got {tau}")
        if not (use_e2e or use_single):
            raise ValueError("LcronLoss: use_e2e and use_single cannot both be False")
        if weighting not in (UWL, FIXED):
            raise ValueError(f"LcronLoss: weighting must be 'uwl' or 'fixed', got {weighting!r}")
        if stage_top_k is not None and len(stage_top_k) != self.num_stages:
            raise ValueError(
                f"LcronLoss: stage_top_k needs one k per stage ({self.num_stages}), "
                f"got {tuple(stage_top_k)}"
            )
        if weighting == FIXED and use_single and len(fixed_weights) != self.num_stages:
            raise ValueError(
                f"LcronLoss: fixed_weights needs one weight per stage ({self.num_stages}), "
                f"got {tuple(fixed_weights)}"
            )
        if impl not in IMPLS:
            raise ValueError(f"LcronLoss: impl must be one of {IMPLS}, got {impl!r}")
        if block_rows < 1:
            raise ValueError(f"LcronLoss: block_rows must be >= 1, got {block_rows}")
        self.impl = impl
        self.block_rows = int(block_rows)
        self.sort_op = sort_op
        self.tau = float(tau)
        self.stage_top_k = None if stage_top_k is None else tuple(int(k) for k in stage_top_k)
        self.use_e2e = bool(use_e2e)
        self.use_single = bool(use_single)
        self.weighting = weighting
        self.fixed_weights = tuple(float(w) for w in fixed_weights)
        self.uwl_weights: list[tf.Variable] = []
        if self.use_single and self.weighting == UWL:
            self.uwl_weights = [
                self.add_weight(name=f"uwl_w_{name}", shape=(), initializer="ones", trainable=True)
                for name in self.stage_names
            ]

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        impl = resolve_impl(self.impl, stage_logits[0].shape[-1])
        compute = _xla_cascade_terms if impl in (DENSE_XLA, BLOCKED_XLA) else lcron_cascade_terms
        terms = compute(
            list(stage_logits),
            labels,
            mask,
            gt_num=self.gt_num,
            ks=self.stage_top_k,
            sort_op=self.sort_op,
            tau=self.tau,
            impl=impl,
            block_rows=self.block_rows,
            single_weights=self.single_weights,
        )
        total = terms["l_e2e"] if self.use_e2e else tf.constant(0.0)
        if self.use_single:
            for s, name in enumerate(self.stage_names):
                single = terms[f"l_single_{name}"]
                if self.weighting == UWL:
                    w_sq = tf.square(self.uwl_weights[s])
                    total = total + 0.5 / w_sq * single + 0.5 * tf.math.log(w_sq)
                    terms[f"uwl_w_{name}"] = tf.identity(self.uwl_weights[s])
                else:
                    total = total + self.fixed_weights[s] * single
        terms["loss"] = total
        return terms

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            sort_op=self.sort_op,
            tau=self.tau,
            stage_top_k=self.stage_top_k,
            use_e2e=self.use_e2e,
            use_single=self.use_single,
            weighting=self.weighting,
            fixed_weights=self.fixed_weights,
            impl=self.impl,
            block_rows=self.block_rows,
            single_weights=self.single_weights,
        )
        return config
