"""ARF and ARF-v2: each stage's relaxed Recall, assuming an ideal downstream, plus a global term."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses import sorting
from models.losses.baselines import layout
from models.losses.baselines.common import BaselineLoss

EPS = 1e-6
LABEL_TAU = 1e-4  # the authors' near-hard sort of the labels
TAU = 200.0  # the authors' temperature of the sort of the logits (hard-coded in arf.py)


@tf.keras.utils.register_keras_serializable(package="lcron")
class ArfLoss(BaselineLoss):
    """ARF (Wang et al., WWW 2024, Adaptive Neural Ranking Framework) as ``two_stage/arf.py``.

    Per stage s (retrieval: support m_s = stage_keep[0] = 30; ranking: m_s = stage_keep[1] = 20;
    top_k = gt_num = 10), with the stage's logits z [batch, N] in the benchmark's layout
    (``layout``) and n_b the request's number of real candidates:

      P = NeuralSort(z, tau) * S,  Y = NeuralSort(labels, 1e-4) * S   [batch, N, N], rows = ranks
      S[r, i] = a_r a_i,  a = the benchmark's "label mask" (see below)
      y_i = sum_{r<top_k} Y[r, i]   (the ground truth),   p_i = mean_{r<m_s} P[r, i]
      L_relax  = mean_b [n_b > m_s] mean_{i<N} -log(p_i + eps) y_i a_i
      L_global = mean_b [n_b >= N]  mean_{r<N} mean_{i<N} -log(P[r, i] + eps) Y[r, i]
      L_s = 0.5 / w_s^2 L_global + L_relax + log w_s        (w_s learnable, initialised to 1)
      loss = L_retrieval + L_ranking

    The labels' near-hard sort makes sum_{r<top_k} Y[r, i] the indicator of the top_k labels
    (the ground truth; tied labels share a rank's mass). L_relax is the log of each
    ground-truth item's mean probability over the stage's first m_s ranks, averaged over all N
    slots (not over the positives): a relaxed Recall@top_k@m_s that assumes the next stage is
    ideal. L_global is a listwise cross-entropy of the whole permutation, weighted by the
    uncertainty weight w_s ("ArfLossModel": one per stage, trained with the models).

    The benchmark's accidents ("benchmark", default) and what "clean" does instead:
      - padding enters both sorts: NeuralSort runs over all N slots (padding slots hold the
        padding's logit and their block's label), so padding competes for ranks; clean: sorts
        over real candidates only (``sorting.neural_sort`` with the mask);
      - the label mask a is positional, a_p = [p < n_b] (the first n_b positions of the
        layout, which are the real candidates only when no group is short); it masks both ranks
        and items; clean: ranks r < n_b and real items, S[r, i] = [r < n_b] m_i, a_i = m_i.

    Args (beyond ``BaselineLoss``):
      tau: temperature of the sort of the logits (authors: 200).

    Three stages (``three_stage/arf.py``, ``compute_arf_loss``): the same per-stage loss for
    each of the three stages over the five-block layout (N = 50), with supports m_s =
    stage_keep (the authors' 40, 30, 20), one learnable w per stage; the stages' totals summed
    (each stage's optimiser steps on its own).

    Returned terms: "loss", and per stage "l_relax_<stage>", "l_global_<stage>",
    "arf_w_<stage>".
    """

    method = "arf"
    stage_counts = (2, 3)

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        group_size: int | None = None,
        variant: str = "benchmark",
        stage_keep: Sequence[int] = (30, 20),
        tau: float = TAU,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages, gt_num, group_size, variant, stage_keep, **kwargs)
        if tau <= 0:
            raise ValueError(f"{type(self).__name__}: tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.global_weights = [
            self.add_weight(name=f"arf_w_{name}", shape=(), initializer="ones", trainable=True)
            for name in self.stage_names
        ]

    def _masks(self, lists: layout.BenchmarkLists) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(S [B, N, N], item mask a [B, N], count [B, 1])."""
        count = lists.count[:, tf.newaxis]
        first = tf.cast(tf.range(lists.size)[tf.newaxis, :], tf.float32) < count  # [B, N]
        first = tf.cast(first, tf.float32)
        items = lists.mask if self.clean else first
        both = first[:, :, tf.newaxis] * items[:, tf.newaxis, :]
        return both, items, count

    def _sorts(
        self, logits: tf.Tensor, lists: layout.BenchmarkLists
    ) -> tuple[tf.Tensor, tf.Tensor]:
        mask = lists.mask if self.clean else None
        perm = sorting.neural_sort(logits, mask, self.tau)
        label_perm = tf.stop_gradient(sorting.neural_sort(lists.labels, mask, LABEL_TAU))
        return perm, label_perm

    def _relax(
        self, perm: tf.Tensor, label_perm: tf.Tensor, items: tf.Tensor, m: int | tf.Tensor
    ) -> tf.Tensor:
        """Per request, ARF's L_relax before the [n > m] gate (``LRelaxLoss``)."""
        kept = tf.reduce_mean(perm[:, :m, :], axis=-2)
        truth = tf.reduce_sum(label_perm[:, : self.gt_num, :], axis=-2)
        return tf.reduce_mean(-tf.math.log(kept + EPS) * truth * items, axis=-1)

    def _stage(
        self, logits: tf.Tensor, lists: layout.BenchmarkLists, m: int, weight: tf.Variable
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        both, items, count = self._masks(lists)
        perm, label_perm = self._sorts(logits, lists)
        perm, label_perm = perm * both, label_perm * both
        m = min(m, lists.size) if isinstance(lists.size, int) else tf.minimum(m, lists.size)
        enough = tf.cast(count[:, 0] > tf.cast(m, tf.float32), tf.float32)
        l_relax = tf.reduce_mean(self._relax(perm, label_perm, items, m) * enough)
        full = tf.cast(count[:, 0] >= tf.cast(lists.size, tf.float32), tf.float32)
        per_request = tf.reduce_mean(-tf.math.log(perm + EPS) * label_perm, axis=[-2, -1])
        l_global = tf.reduce_mean(per_request * full)
        w_sq = tf.square(weight)
        total = 0.5 / w_sq * l_global + l_relax + 0.5 * tf.math.log(w_sq)  # log w for w > 0
        return total, l_relax, l_global

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        return self.cascade_terms([retrieval, ranking], lists)

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        terms: dict[str, tf.Tensor] = {}
        total = tf.constant(0.0)
        for name, logits, m, weight in zip(
            self.stage_names,
            stage_logits,
            self.stage_keep,
            self.global_weights,
            strict=True,
        ):
            stage_total, l_relax, l_global = self._stage(logits, lists, m, weight)
            terms[f"l_relax_{name}"] = l_relax
            terms[f"l_global_{name}"] = l_global
            terms[f"arf_w_{name}"] = tf.identity(weight)
            total = total + stage_total
        terms["loss"] = total
        return terms

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(tau=self.tau)
        return config


@tf.keras.utils.register_keras_serializable(package="lcron")
class ArfV2Loss(ArfLoss):
    """ARF-v2 as ``two_stage/arf.py`` (``LRelaxUltraLoss``): ARF with a two-sided L_relax.

    Everything as :class:`ArfLoss` (the same L_global, weights, masks and accidents) except
    L_relax, which normalises a stage's keep/drop mass by the column sum c_i = sum_r P[r, i]
    held constant (as LCRON's L_single does) and adds the non-ground-truth items' drop term:

      keep_i = sum_{r<m_s} P[r, i] / (c_i + eps),   drop_i = sum_{r>=m_s} P[r, i] / (c_i + eps)
      L_relax = mean_b [n_b > m_s] mean_{i<N} a_i (-log(keep_i + eps) sum_{r<top_k} Y[r, i]
                                                   -log(drop_i + eps) sum_{r>=top_k} Y[r, i])
    """

    method = "arf_v2"

    def _relax(
        self, perm: tf.Tensor, label_perm: tf.Tensor, items: tf.Tensor, m: int | tf.Tensor
    ) -> tf.Tensor:
        column = tf.stop_gradient(tf.reduce_sum(perm, axis=-2)) + EPS
        keep = tf.reduce_sum(perm[:, :m, :], axis=-2) / column
        drop = tf.reduce_sum(perm[:, m:, :], axis=-2) / column
        truth = tf.reduce_sum(label_perm[:, : self.gt_num, :], axis=-2)
        rest = tf.reduce_sum(label_perm[:, self.gt_num :, :], axis=-2)
        up = tf.reduce_mean(-tf.math.log(keep + EPS) * truth * items, axis=-1)
        down = tf.reduce_mean(-tf.math.log(drop + EPS) * rest * items, axis=-1)
        return up + down
