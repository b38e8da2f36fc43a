"""BCE: each stage trained alone, pointwise, on the stage samples it serves."""

from __future__ import annotations

import tensorflow as tf

from models.losses.baselines import layout
from models.losses.baselines.common import BaselineLoss, bce_with_logits, numel


@tf.keras.utils.register_keras_serializable(package="lcron")
class BceLoss(BaselineLoss):
    """BCE (the paper's stage-wise baseline), as ``two_stage/bce.py`` computes it.

    Target t_i = 1 for a rank_pos slot, 0 for every other slot; m_i the real-candidate mask;
    logits in the benchmark's layout (``layout``), [batch, N] with N = 4 G:

      L_retrieval = sum_{b, i < N}  m_i BCE(z^r_i, t_i) / (batch * N)     all four groups
      L_ranking   = sum_{b, i < 2G} m_i BCE(z^k_i, t_i) / (batch * 2G)    rank_pos, rank_neg
      loss = L_retrieval + L_ranking

    i.e. PyTorch's ``binary_cross_entropy_with_logits(weight=mask, reduction="mean")``: padding
    weighs 0 but counts in the denominator (the number of slots, not of real candidates). The
    ranking stage learns only to tell rank_pos from rank_neg, the two groups it ranked in the
    logs; retrieval learns rank_pos against all. The stages never see each other (the authors
    step two optimisers on the two terms; one optimiser on the sum moves the same parameters the
    same way). ``variant`` changes nothing here: this definition has no accident.

    Three stages (``three_stage/bce.py``; five blocks, rerank_pos the target): each stage on
    the leading blocks it served, with the same reduction (slots of those blocks, padding
    included, in the denominator): retrieval all five, pre-ranking the first four (rerank_pos
    .. coarse_neg), ranking the first two (rerank_pos, rerank_neg).

    Returned terms: "loss", "l_bce_<stage>" per stage ("retrieval", "stage1", "ranking").
    """

    method = "bce"
    stage_counts = (2, 3)
    # Blocks each stage trains on, first stage first, by depth (three_stage/bce.py).
    BLOCKS = {3: (5, 4, 2)}

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        target = lists.in_groups(layout.RANK_POS)
        ranked = lists.in_groups(layout.RANK_POS, layout.RANK_NEG)
        weight = lists.mask
        l_retrieval = tf.reduce_sum(weight * bce_with_logits(retrieval, target)) / numel(weight)
        per_slot = ranked * weight * bce_with_logits(ranking, target)
        l_ranking = tf.reduce_sum(per_slot) / (numel(weight) / 2.0)  # batch * 2G slots
        return {
            "loss": l_retrieval + l_ranking,
            "l_bce_retrieval": l_retrieval,
            "l_bce_ranking": l_ranking,
        }

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        target = lists.in_groups(0)
        weight = lists.mask
        terms: dict[str, tf.Tensor] = {}
        total = tf.constant(0.0)
        for name, logits, blocks in zip(
            self.stage_names, stage_logits, self.BLOCKS[self.num_stages], strict=True
        ):
            served = lists.in_groups(*range(blocks))
            slots = numel(weight) * blocks / lists.num_groups  # batch * blocks * G
            term = tf.reduce_sum(served * weight * bce_with_logits(logits, target)) / slots
            terms[f"l_bce_{name}"] = term
            total = total + term
        terms["loss"] = total
        return terms
