"""FS-LTR: every stage learns to rank the full-stage samples (all four stage groups)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses.baselines import layout
from models.losses.baselines.common import BaselineLoss, batch_size, bce_with_logits


@tf.keras.utils.register_keras_serializable(package="lcron")
class FsRankNetLoss(BaselineLoss):
    """FS-RankNet (Zheng et al., WWW 2024, with RankNet) as ``two_stage/fs_ranknet.py``.

    Per stage, logits z [batch, N] in the benchmark's layout (``layout``), m the real mask, and
    for each of the three upper groups a (rank_pos, rank_neg, coarse_neg) its anchors i in
    block a against every slot j of the blocks below it (there are (3 - a) G of them):

      L_a = sum_{b, i in a, j below a} m_i log(1 + exp(-(z_i - z_j)))
            / ((3 - a) G sum_{b, i in a} m_i)
      L_stage = L_rank_pos + L_rank_neg + L_coarse_neg          (each group averaged on its own)
      loss = L_retrieval + L_ranking

    No pair inside a group; the sums run over the whole batch before dividing. Each stage is
    trained alone (the authors step each stage's optimiser on its own L_stage).

    The benchmark's accident ("benchmark", default) and what "clean" does instead: only the
    anchor's mask is used, so padding slots of the lower blocks count as negatives; clean: both
    masks, L_a = sum m_i m_j log(1 + exp(-(z_i - z_j))) / sum m_i m_j. A batch without a real
    anchor in a group gives L_a = 0 (the authors' 0 / 0).

    Three stages (``three_stage/fs_ranknet.py``, run on each stage's logits): five blocks, the
    anchors of each of the four upper blocks against every slot below, and no mask at all (a
    further accident of that code: padded anchors count too), L_a = sum_{b, i in a, j below a}
    log(1 + exp(-(z_i - z_j))) / ((4 - a) G batch G); clean as above.

    Returned terms: "loss", "l_fs_ranknet_<stage>" per stage ("retrieval", ["stage1",]
    "ranking").
    """

    method = "fs_ranknet"
    stage_counts = (2, 3)

    def _stage_loss(self, logits: tf.Tensor, lists: layout.BenchmarkLists) -> tf.Tensor:
        total = tf.constant(0.0)
        for group in range(lists.num_groups - 1):  # every block with a block below it
            start, end = lists.block(group)
            anchors, anchor_mask = logits[:, start:end], lists.mask[:, start:end]
            below, below_mask = logits[:, end:], lists.mask[:, end:]
            pairs = tf.nn.softplus(-(anchors[:, :, tf.newaxis] - below[:, tf.newaxis, :]))
            if self.num_stages > 2 and not self.clean:  # three_stage/: no mask at all
                anchor_mask = tf.ones_like(anchor_mask)
            weight = anchor_mask[:, :, tf.newaxis]
            if self.clean:
                weight = weight * below_mask[:, tf.newaxis, :]
                denominator = tf.reduce_sum(weight * tf.ones_like(pairs))
            else:
                below_slots = tf.cast((lists.num_groups - 1 - group) * lists.group_size, tf.float32)
                denominator = below_slots * tf.reduce_sum(anchor_mask)
            total = total + tf.reduce_sum(pairs * weight) / tf.maximum(denominator, 1.0)
        return total

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        terms = {
            f"l_fs_ranknet_{name}": self._stage_loss(logits, lists)
            for name, logits in zip(self.stage_names, stage_logits, strict=True)
        }
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        terms = {
            "l_fs_ranknet_retrieval": self._stage_loss(retrieval, lists),
            "l_fs_ranknet_ranking": self._stage_loss(ranking, lists),
        }
        terms["loss"] = terms["l_fs_ranknet_retrieval"] + terms["l_fs_ranknet_ranking"]
        return terms


def _discount(rank: tf.Tensor) -> tf.Tensor:
    """The authors' rank discount 1 / ln(1 + rank) (natural log, rank from 1)."""
    return 1.0 / tf.math.log(rank + 1.0)


@tf.keras.utils.register_keras_serializable(package="lcron")
class FsLambdaLossLoss(BaselineLoss):
    """FS-LambdaLoss (Zheng et al., WWW 2024, with LambdaLoss, Wang et al., CIKM 2018) as
    ``two_stage/fs_lambdaloss.py`` with the settings ``run_train2.py`` passes.

    Per stage, logits z [batch, N] in the benchmark's layout (``layout``), labels l (the
    benchmark's: 30 - rank_index, 7, 6, 5), r_i the rank of z_i (1 = largest; ties: the lower
    position first), D(r) = 1 / ln(1 + r):

      gain g_i     = l_i / IDCG,  IDCG = sum_r sort_desc(l)_r D(r)   (the label itself as gain)
      u_ij         = |D(|r_i - r_j|) - D(|r_i - r_j| + 1)|  if r_i != r_j and min(r_i, r_j) <= topn
      v_ij         = |D'(r_i) - D'(r_j)|,  D'(r) = D(r) if r <= topn else 0
      w_ij         = stop_gradient(|g_i - g_j| ((1 - f) u_ij + f v_ij))       (f: smooth fraction)
      L_stage      = mean_b sum_{i, j} w_ij BCE(z_i - z_j, [l_i > l_j])
      loss = L_retrieval + L_ranking

    Every unordered pair is counted twice (once as (i, j), once as (j, i), same value). The
    authors run it with topn = 30 and f = 0.8.

    The benchmark's accident ("benchmark", default) and what "clean" does instead: the mask is
    ignored, so padding slots take ranks, count in IDCG and form pairs with their block's
    label (30 for a padded rank_pos slot); clean: padding ranks after every real candidate, has
    gain 0 and no pair weight.

    Args (beyond ``BaselineLoss``):
      topn: rank cut-off of the pair discount (authors: 30).
      smooth_fraction: f (authors: 0.8; at most 0.001 means u alone).

    Three stages (``three_stage/fs_lambdaloss.py``): the same per-stage loss on the five-block
    layout (labels 30 - rerank_index, 8, 7, 6, 5) for each of the three stages, summed.

    Returned terms: "loss", "l_fs_lambdaloss_<stage>" per stage ("retrieval", ["stage1",]
    "ranking").
    """

    method = "fs_lambdaloss"
    stage_counts = (2, 3)

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        group_size: int | None = None,
        variant: str = "benchmark",
        stage_keep: Sequence[int] = (30, 20),
        topn: int = 30,
        smooth_fraction: float = 0.8,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages, gt_num, group_size, variant, stage_keep, **kwargs)
        if topn < 1:
            raise ValueError(f"FsLambdaLossLoss: topn must be >= 1, got {topn}")
        if not 0.0 <= smooth_fraction <= 1.0:
            raise ValueError(
                f"FsLambdaLossLoss: smooth_fraction must be in [0, 1], got {smooth_fraction}"
            )
        self.topn = int(topn)
        self.smooth_fraction = float(smooth_fraction)

    def _pair_weights(self, logits: tf.Tensor, lists: layout.BenchmarkLists) -> tf.Tensor:
        real = lists.mask
        sortable = tf.where(real > 0, logits, tf.float32.min) if self.clean else logits
        order = tf.argsort(sortable, axis=-1, direction="DESCENDING", stable=True)
        rank = tf.cast(tf.argsort(order, axis=-1, stable=True) + 1, tf.float32)  # [B, N]
        labels = lists.labels * real if self.clean else lists.labels
        ideal = tf.sort(labels, axis=-1, direction="DESCENDING")
        positions = tf.cast(tf.range(1, tf.shape(labels)[-1] + 1), tf.float32)
        idcg = tf.reduce_sum(ideal * _discount(positions), axis=-1, keepdims=True)
        gain = labels * tf.math.divide_no_nan(1.0, idcg)
        pair_gain = tf.abs(gain[:, :, tf.newaxis] - gain[:, tf.newaxis, :])
        rank_i, rank_j = rank[:, :, tf.newaxis], rank[:, tf.newaxis, :]
        rank_diff = tf.abs(rank_i - rank_j)
        near_top = (rank_i <= self.topn) | (rank_j <= self.topn)
        safe_diff = tf.maximum(rank_diff, 1.0)
        u = tf.where(
            (rank_diff > 0) & near_top,
            tf.abs(_discount(safe_diff) - _discount(safe_diff + 1.0)),
            tf.zeros_like(rank_diff),
        )
        if self.smooth_fraction > 0.001:
            top_discount = tf.where(rank > self.topn, tf.zeros_like(rank), _discount(rank))
            v = tf.abs(top_discount[:, :, tf.newaxis] - top_discount[:, tf.newaxis, :])
            discount = (1.0 - self.smooth_fraction) * u + self.smooth_fraction * v
        else:
            discount = u
        weight = pair_gain * discount
        if self.clean:
            weight = weight * real[:, :, tf.newaxis] * real[:, tf.newaxis, :]
        return tf.stop_gradient(weight)

    def _stage_loss(self, logits: tf.Tensor, lists: layout.BenchmarkLists) -> tf.Tensor:
        labels = lists.labels
        pair_logits = logits[:, :, tf.newaxis] - logits[:, tf.newaxis, :]
        higher = tf.cast(labels[:, :, tf.newaxis] > labels[:, tf.newaxis, :], tf.float32)
        pairs = bce_with_logits(pair_logits, higher) * self._pair_weights(logits, lists)
        return tf.reduce_sum(pairs) / batch_size(logits)

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        terms = {
            "l_fs_lambdaloss_retrieval": self._stage_loss(retrieval, lists),
            "l_fs_lambdaloss_ranking": self._stage_loss(ranking, lists),
        }
        terms["loss"] = terms["l_fs_lambdaloss_retrieval"] + terms["l_fs_lambdaloss_ranking"]
        return terms

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        terms = {
            f"l_fs_lambdaloss_{name}": self._stage_loss(logits, lists)
            for name, logits in zip(self.stage_names, stage_logits, strict=True)
        }
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(topn=self.topn, smooth_fraction=self.smooth_fraction)
        return config
