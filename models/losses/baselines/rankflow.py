"""RankFlow: ranking learns on what retrieval passes; retrieval also learns from ranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses.baselines import layout
from models.losses.baselines.common import BaselineLoss, bce_with_logits, cut, mask_out


def _masked_mean(values: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


@tf.keras.utils.register_keras_serializable(package="lcron")
class RankFlowLoss(BaselineLoss):
    """RankFlow (Qin et al., SIGIR 2022) as ``two_stage/rankflow.py`` computes it.

    Logits z^r, z^k [batch, N] in the benchmark's layout (``layout``); target t_i = 1 for a
    rank_pos slot, else 0; T = the indices of retrieval's top-k_r (k_r = stage_keep[0], 30):

      L_retrieval = mean_{b, i < N} BCE(z^r_i, t_i)                    self-learning, all slots
      L_ranking   = mean_{b, i in T} BCE(z^k_i, t_i)                   what retrieval passes
      L_distill   = mean_{b, i in T} (stop_gradient(z^k_i) - z^r_i)^2  ranking teaches retrieval
      L_rank      = -mean_b log sigmoid(mean_{i in T+} z^r_i - mean_{i in T-} z^r_i)
      loss = L_retrieval + L_ranking + (1 - alpha) L_distill + alpha L_rank

    with T+ / T- the gt_num highest / k_r - gt_num lowest of T by ranking's logit. The authors
    train with alpha = 0 (``run_train2.py``), so L_rank (computed only when alpha != 0) is off
    by default. Top-k ties are broken by benchmark position (the lower first).

    The benchmark's accident ("benchmark", default) and what "clean" does instead: the mask is
    ignored, so padding slots enter every term with their block's target (1 for a padded
    rank_pos slot) and can take places in T; clean: means over real candidates only and T =
    retrieval's top-k_r among real candidates.

    Args (beyond ``BaselineLoss``):
      alpha: weight of L_rank against L_distill (authors: 0).

    Three stages (``three_stage/rankflow.py``; five blocks, rerank_pos the target; cut-offs
    k1, k2, k3 = stage_keep, the authors' 40, 30, 20): the flow goes one stage further and every
    term counts once (no alpha). With T1 = retrieval's top-k1 and, for s = 1, 2, T_{s+1} = stage
    s's top-k_{s+1} of T_s (stage 1: pre-ranking, stage 2: ranking):

      L_bce_retrieval = mean over all slots of BCE(z^0, t)
      L_bce_s         = mean_{T_s} BCE(z^s, t)                          s = 1, 2
      L_distill_{s-1} = mean_{T_s} (stop_gradient(z^s) - z^{s-1})^2      stage s teaches s - 1
      L_rank_{s-1}    = -mean_b log sigmoid(mean_{T_s top k_{s+1} by z^s} z^{s-1}
                                            - mean_{T_s bottom k_s - k_{s+1} by z^s} z^{s-1})
      loss = sum of the seven terms

    Accident and clean variant as in two stages (the mask ignored; clean: real candidates only).

    Returned terms (two stages): "loss", "l_bce_retrieval", "l_bce_ranking", "l_distill"
    (+ "l_rank"); (three): "l_bce_<stage>" per stage, "l_distill_<stage>" and "l_rank_<stage>"
    for each student stage ("retrieval", "stage1").
    """

    method = "rankflow"
    stage_counts = (2, 3)

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        group_size: int | None = None,
        variant: str = "benchmark",
        stage_keep: Sequence[int] = (30, 20),
        alpha: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages, gt_num, group_size, variant, stage_keep, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RankFlowLoss: alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        target = tf.broadcast_to(lists.in_groups(layout.RANK_POS), tf.shape(retrieval))
        real = lists.mask if self.clean else tf.ones_like(lists.mask)
        k = cut(self.stage_keep[0], lists.size)
        selectable = mask_out(retrieval, real) if self.clean else retrieval
        passed = tf.math.top_k(selectable, k=k).indices  # [batch, k]
        passed_real = tf.gather(real, passed, batch_dims=1)
        passed_target = tf.gather(target, passed, batch_dims=1)
        passed_ranking = tf.gather(ranking, passed, batch_dims=1)
        passed_retrieval = tf.gather(retrieval, passed, batch_dims=1)

        l_retrieval = _masked_mean(bce_with_logits(retrieval, target), real)
        l_ranking = _masked_mean(bce_with_logits(passed_ranking, passed_target), passed_real)
        gap = tf.stop_gradient(passed_ranking) - passed_retrieval
        l_distill = _masked_mean(tf.square(gap), passed_real)
        terms = {
            "l_bce_retrieval": l_retrieval,
            "l_bce_ranking": l_ranking,
            "l_distill": l_distill,
        }
        total = l_retrieval + l_ranking + (1.0 - self.alpha) * l_distill
        if self.alpha:
            terms["l_rank"] = self._rank_term(passed_ranking, passed_retrieval, passed_real, k)
            total = total + self.alpha * terms["l_rank"]
        terms["loss"] = total
        return terms

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        first = stage_logits[0]
        target = tf.broadcast_to(lists.in_groups(0), tf.shape(first))
        real = lists.mask if self.clean else tf.ones_like(lists.mask)
        keeps = [cut(k, lists.size) for k in self.stage_keep]
        names = self.stage_names
        terms = {f"l_bce_{names[0]}": _masked_mean(bce_with_logits(first, target), real)}
        pool = self._top(first, real, keeps[0])  # T1: slots of the benchmark list
        for s in range(1, self.num_stages):
            take = lambda values, idx=pool: tf.gather(values, idx, batch_dims=1)  # noqa: E731
            teacher, student = take(stage_logits[s]), take(stage_logits[s - 1])
            pool_real, pool_target = take(real), take(target)
            terms[f"l_bce_{names[s]}"] = _masked_mean(
                bce_with_logits(teacher, pool_target), pool_real
            )
            gap = tf.stop_gradient(teacher) - student
            terms[f"l_distill_{names[s - 1]}"] = _masked_mean(tf.square(gap), pool_real)
            k_next = keeps[s]
            terms[f"l_rank_{names[s - 1]}"] = self._split_term(
                teacher, student, pool_real, k_next, keeps[s - 1] - k_next
            )
            # T_{s+1}: stage s's top k_{s+1} of T_s, as slots of the benchmark list.
            pool = tf.gather(pool, self._top(teacher, pool_real, k_next), batch_dims=1)
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms

    def _top(self, scores: tf.Tensor, real: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
        """Indices of the k largest scores (clean: among real candidates first)."""
        return tf.math.top_k(mask_out(scores, real) if self.clean else scores, k=k).indices

    def _split_term(
        self,
        teacher: tf.Tensor,
        student: tf.Tensor,
        real: tf.Tensor,
        n_top: int | tf.Tensor,
        n_bottom: int | tf.Tensor,
    ) -> tf.Tensor:
        """-mean_b log sigmoid(mean of the student's logits on the teacher's top n_top minus
        their mean on the teacher's bottom n_bottom)."""
        top = self._top(teacher, real, n_top)
        low = -mask_out(teacher, real, 1e9) if self.clean else -teacher
        bottom = tf.math.top_k(low, k=n_bottom).indices
        pos = tf.reduce_mean(tf.gather(student, top, batch_dims=1), axis=-1)
        neg = tf.reduce_mean(tf.gather(student, bottom, batch_dims=1), axis=-1)
        return -tf.reduce_mean(tf.math.log_sigmoid(pos - neg))

    def _rank_term(
        self, ranking: tf.Tensor, retrieval: tf.Tensor, real: tf.Tensor, k: int | tf.Tensor
    ) -> tf.Tensor:
        n_pos = cut(self.gt_num, k)
        scores = mask_out(ranking, real) if self.clean else ranking
        top = tf.math.top_k(scores, k=n_pos).indices
        bottom = tf.math.top_k(
            -mask_out(ranking, real, 1e9) if self.clean else -ranking, k=k - n_pos
        )
        pos = tf.reduce_mean(tf.gather(retrieval, top, batch_dims=1), axis=-1)
        neg = tf.reduce_mean(tf.gather(retrieval, bottom.indices, batch_dims=1), axis=-1)
        return -tf.reduce_mean(tf.math.log_sigmoid(pos - neg))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha)
        return config
