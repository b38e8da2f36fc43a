"""ICC: the two stages' scores gated into one ensemble score, trained with a pairwise loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses.baselines import layout
from models.losses.baselines.common import (
    BaselineLoss,
    batch_size,
    bce_with_logits,
    cut,
    kth_largest,
    mask_out,
)

SIGMA = 1e-3  # steepness of the authors' logistic gate


@tf.keras.utils.register_keras_serializable(package="lcron")
class IccLoss(BaselineLoss):
    """ICC (Gallagher et al., WSDM 2019, joint cascade optimisation) as ``two_stage/icc.py``.

    Logits z^r (retrieval), z^k (ranking), [batch, N] in the benchmark's layout (``layout``),
    labels l (the benchmark's: 30 - rank_index, 7, 6, 5). A stage's gate is a steep sigmoid
    around its k-th largest score kappa(z, k):

      g^r_i = sigmoid((z^r_i - kappa(z^r, k_r)) / sigma)
      g^k_i = sigmoid((z^k_i - kappa(z^k, k_k)) / sigma)          sigma = 1e-3
      s_i   = (1 - g^r_i) z^r_i + g^r_i g^k_i z^k_i               (the ensemble score)
      loss  = sum_b sum_{i < j} BCE(s_i - s_j, [l_i > l_j]) / (batch * N * N)

    so an item retrieval drops is scored by retrieval, one both stages keep by ranking, and one
    retrieval keeps but ranking drops gets 0. Gradients reach both stages through s and through
    each kappa (the k-th item's score).

    The benchmark's accidents ("benchmark", default) and what "clean" does instead:
      - ranking's gate uses the retrieval cut-off, k_k = k_r = stage_keep[0] (30); clean:
        k_k = stage_keep[1] (20);
      - the mask is ignored: padding slots (with the padding's logit and their block's label,
        30 for a padded rank_pos slot) enter kappa and the pairs; clean: padding is left out of
        both (a kappa beyond the real candidates gates every real one open);
      - pairs with equal labels count, with target 0 for the earlier position (i < j), which
        pushes the earlier slot below the later one; clean: only pairs with different labels.
    Both variants divide by batch * N * N.

    Three stages (``three_stage/icc.py``; five blocks, labels 30 - rerank_index, 8, 7, 6, 5):
    gates of retrieval (k1), pre-ranking (k2) and ranking, and later stages' scores doubled:

      s_i = (1 - g^0_i) z^0_i + g^0_i 2 (1 - g^1_i) z^1_i + g^0_i g^1_i 4 g^2_i z^2_i

    with the same pairwise loss. The benchmark gates ranking at pre-ranking's cut-off k2 (30,
    the code's joint_prerank_k where joint_rank_k was meant); clean: at k3 (20); the other
    accidents and their clean fixes as in two stages.

    Returned terms: "loss", "l_icc".
    """

    method = "icc"
    stage_counts = (2, 3)

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        group_size: int | None = None,
        variant: str = "benchmark",
        stage_keep: Sequence[int] = (30, 20),
        sigma: float = SIGMA,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages, gt_num, group_size, variant, stage_keep, **kwargs)
        if sigma <= 0:
            raise ValueError(f"IccLoss: sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def _gate(self, logits: tf.Tensor, k: int, lists: layout.BenchmarkLists) -> tf.Tensor:
        scores = mask_out(logits, lists.mask) if self.clean else logits
        kappa = kth_largest(scores, cut(k, lists.size))
        return tf.sigmoid((logits - kappa) / self.sigma)

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        keep_retrieval, keep_ranking = self.stage_keep
        gate_r = self._gate(retrieval, keep_retrieval, lists)
        gate_k = self._gate(ranking, keep_ranking if self.clean else keep_retrieval, lists)
        score = (1.0 - gate_r) * retrieval + gate_r * gate_k * ranking
        l_icc = self._pair_loss(score, lists)
        return {"loss": l_icc, "l_icc": l_icc}

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        keeps = list(self.stage_keep)
        if not self.clean:
            keeps[-1] = keeps[-2]  # the benchmark gates ranking at pre-ranking's cut-off
        last = len(stage_logits) - 1
        score = tf.zeros_like(stage_logits[0])
        passed = tf.ones_like(stage_logits[0])  # product of the upstream gates
        for s, (logits, k) in enumerate(zip(stage_logits, keeps, strict=True)):
            gate = self._gate(logits, k, lists)
            if s < last:  # dropped here: scored by this stage, doubled per stage
                score = score + passed * (2.0**s) * (1.0 - gate) * logits
                passed = passed * gate
            else:  # kept by every stage
                score = score + passed * (2.0**s) * gate * logits
        l_icc = self._pair_loss(score, lists)
        return {"loss": l_icc, "l_icc": l_icc}

    def _pair_loss(self, score: tf.Tensor, lists: layout.BenchmarkLists) -> tf.Tensor:
        """sum_b sum_{i < j} BCE(s_i - s_j, [l_i > l_j]) / (batch N N) (clean: real pairs with
        different labels)."""
        labels = lists.labels
        n = lists.size
        upper = tf.linalg.band_part(tf.ones([n, n]), 0, -1) - tf.eye(n)  # i < j
        pair_logits = score[:, :, tf.newaxis] - score[:, tf.newaxis, :]
        higher = labels[:, :, tf.newaxis] > labels[:, tf.newaxis, :]
        weight = upper[tf.newaxis]
        if self.clean:
            real = lists.mask[:, :, tf.newaxis] * lists.mask[:, tf.newaxis, :]
            differ = tf.cast(labels[:, :, tf.newaxis] != labels[:, tf.newaxis, :], tf.float32)
            weight = weight * real * differ
        pairs = bce_with_logits(pair_logits, tf.cast(higher, tf.float32)) * weight
        n_f = tf.cast(n, tf.float32)
        return tf.reduce_sum(pairs) / (batch_size(score) * n_f * n_f)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(sigma=self.sigma)
        return config
