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

    Returned terms: "loss", "l_bce_retrieval", "l_bce_ranking", "l_distill" (+ "l_rank").
    """

    method = "rankflow"

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
