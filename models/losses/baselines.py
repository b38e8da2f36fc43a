"""The LCRON paper's baselines (its Table 2), each a :class:`CascadeLoss` selectable by name.

All take the same inputs as LCRON (stage logits first stage first, graded labels, mask) and
return "loss" plus one term per stage. "Ground truth" is the gt_num valid items with the largest
labels (``targets.ground_truth_indicator``); "graded labels" are the stage-group labels
(prerank_neg 0 < coarse_neg 1 < rank_neg 2 < rank_pos 3 + ...). Where the paper names a
pairwise or listwise loss that tensorflow-ranking already has (pairwise logistic = RankNet,
LambdaLoss's NDCG lambda weights, softmax), the tensorflow-ranking Keras loss is used; padding
is passed to it as label -1, which it ignores. tensorflow-ranking is imported when such a loss is
built (it takes seconds to import).

Our reading of each baseline is stated in its docstring; where the paper leaves a choice open
(which items are a stage's positives, the cut-offs) we follow the paper's RecFlow setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses import lcron, sorting, targets
from models.losses.base import CascadeLoss

_REDUCTION = tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE
_PAD_LABEL = -1.0


def _tfr_losses() -> Any:
    import tensorflow_ranking as tfr  # seconds to import: only when a tfr loss is built

    return tfr.keras.losses


def masked_sigmoid_cross_entropy(
    logits: tf.Tensor, targets_01: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    """Mean sigmoid cross-entropy over the valid items of the batch (scalar; 0 if none)."""
    per_item = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets_01, logits=logits)
    return tf.reduce_sum(per_item * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def _padded(labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Labels with padding set to -1, tensorflow-ranking's "invalid item" convention."""
    return tf.where(mask > 0, labels, tf.fill(tf.shape(labels), _PAD_LABEL))


def _check_keep(name: str, stage_keep: Sequence[int], num_stages: int) -> tuple[int, ...]:
    if len(stage_keep) < num_stages:
        raise ValueError(
            f"{name}: stage_keep needs at least {num_stages} cut-offs, got {tuple(stage_keep)}"
        )
    return tuple(int(k) for k in stage_keep[:num_stages])


@tf.keras.utils.register_keras_serializable(package="lcron")
class BceLoss(CascadeLoss):
    """BCE: every stage trained alone, pointwise, on the ground truth.

    loss = sum_s mean_{valid i} BCE(sigmoid(z_s,i), y_i). The stages never see each other: the
    classic stage-wise training the paper starts from. Positives are the ground-truth items for
    every stage (RecFlow's rank_pos, the items the logged system finally kept), negatives all
    other valid items; this is the setting in which "one stage alone cannot solve the task" is
    the failure LCRON addresses.
    """

    method = "bce"

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        y = self.ground_truth(labels, mask)
        terms = {
            f"l_bce_{name}": masked_sigmoid_cross_entropy(logits, y, mask)
            for name, logits in zip(self.stage_names, stage_logits, strict=True)
        }
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms


@tf.keras.utils.register_keras_serializable(package="lcron")
class IccLoss(CascadeLoss):
    """ICC: joint cascade training through the product of the stages' pass probabilities.

    Gallagher, Chen, Culpepper, Koudas (WSDM 2019), "Joint optimization of cascade ranking
    models". The probability that item i passes the cascade is modelled as
    pi_i = prod_s sigmoid(z_s,i), and loss = mean_{valid i} BCE(pi_i, y_i): one objective whose
    gradient reaches every stage. Computed in log space: log pi = sum_s log_sigmoid(z_s), and
    log(1 - pi) = log(-expm1(log pi)), clipped at 1e-7 for finite gradients at pi -> 1.
    """

    method = "icc"

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        y = self.ground_truth(labels, mask)
        log_pass = tf.add_n([tf.math.log_sigmoid(z) for z in stage_logits])
        log_fail = tf.math.log(tf.maximum(-tf.math.expm1(log_pass), 1e-7))
        per_item = -(y * log_pass + (1.0 - y) * log_fail)
        l_icc = tf.reduce_sum(per_item * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        return {"l_icc": l_icc, "loss": l_icc}


@tf.keras.utils.register_keras_serializable(package="lcron")
class RankFlowLoss(CascadeLoss):
    """RankFlow: each stage learns on what its upstream passes, and from its downstream.

    Qin et al. (SIGIR 2022), "RankFlow: Joint optimization of multi-stage cascade ranking
    systems as flows". Our reading, two parts per stage s:
      - self-learning: a listwise softmax loss (tensorflow-ranking ``SoftmaxLoss``) of z_s
        against the ground truth, over the items stage s actually receives at serving: the
        whole list for the first stage, the top-``stage_keep[s-1]`` of the upstream's (detached)
        scores among what it received for later stages;
      - tutor learning (s < last): distillation from the next stage, softmax cross-entropy of
        z_s against softmax(stop_gradient(z_{s+1})) over the items the next stage receives.
    loss = sum_s (self_s + distill_weight * distill_s).

    Args:
      stage_keep: how many items each stage passes downstream (RecFlow: 30, 20).
      distill_weight: weight of the tutor-learning term.
    """

    method = "rankflow"

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        stage_keep: Sequence[int] = (30, 20),
        distill_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages=num_stages, gt_num=gt_num, **kwargs)
        # The last stage passes nothing downstream: one cut-off per upstream stage suffices.
        self.stage_keep = _check_keep("RankFlowLoss", stage_keep, self.num_stages - 1)
        self.distill_weight = float(distill_weight)
        self._softmax = _tfr_losses().SoftmaxLoss(reduction=_REDUCTION)

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        y = self.ground_truth(labels, mask)
        received = [mask]  # received[s]: the items stage s scores at serving
        for s in range(self.num_stages - 1):
            kept = targets.top_k_indicator(
                tf.stop_gradient(stage_logits[s]), received[s], self.stage_keep[s]
            )
            received.append(kept)
        terms: dict[str, tf.Tensor] = {}
        total = tf.constant(0.0)
        for s, name in enumerate(self.stage_names):
            own = self._softmax(_padded(y, received[s]), stage_logits[s])
            terms[f"l_self_{name}"] = own
            total = total + own
            if s + 1 < self.num_stages:
                teacher = tf.nn.softmax(
                    tf.where(
                        received[s + 1] > 0,
                        tf.stop_gradient(stage_logits[s + 1]),
                        tf.fill(tf.shape(mask), -1e9),
                    ),
                    axis=-1,
                )
                distill = self._softmax(_padded(teacher, received[s + 1]), stage_logits[s])
                terms[f"l_distill_{name}"] = distill
                total = total + self.distill_weight * distill
        terms["loss"] = total
        return terms

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(stage_keep=self.stage_keep, distill_weight=self.distill_weight)
        return config


class _FullStageLoss(CascadeLoss):
    """FS-LTR (Zheng et al., WWW 2024, "Full stage learning to rank: a unified framework for
    multi-stage systems"): every stage trained on the full-stage samples (all stage groups in
    the list, graded by how far the logged cascade passed them) with a learning-to-rank loss;
    stages are trained side by side, each with its own copy of the loss.
    """

    def _ranking_loss(self) -> tf.keras.losses.Loss:
        raise NotImplementedError

    def __init__(self, num_stages: int = 2, gt_num: int = 10, **kwargs: Any) -> None:
        super().__init__(num_stages=num_stages, gt_num=gt_num, **kwargs)
        self._loss = self._ranking_loss()

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        graded = _padded(labels, mask)
        terms = {
            f"l_{self.method}_{name}": self._loss(graded, logits)
            for name, logits in zip(self.stage_names, stage_logits, strict=True)
        }
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms


@tf.keras.utils.register_keras_serializable(package="lcron")
class FsRankNetLoss(_FullStageLoss):
    """FS-RankNet: full-stage samples with RankNet (Burges et al., ICML 2005).

    Per stage: sum over pairs with l_i > l_j of log(1 + exp(-(z_i - z_j))), tensorflow-ranking's
    ``PairwiseLogisticLoss`` on the graded labels.
    """

    method = "fs_ranknet"

    def _ranking_loss(self) -> tf.keras.losses.Loss:
        return _tfr_losses().PairwiseLogisticLoss(reduction=_REDUCTION)


@tf.keras.utils.register_keras_serializable(package="lcron")
class FsLambdaLossLoss(_FullStageLoss):
    """FS-LambdaLoss: full-stage samples with LambdaLoss (Wang et al., CIKM 2018).

    Per stage: the pairwise logistic loss weighted by NDCG lambda weights (LambdaLoss's
    NDCG-Loss2, tensorflow-ranking's ``NDCGLambdaWeightV2``, gain 2^l - 1), which bounds NDCG.
    """

    method = "fs_lambdaloss"

    def _ranking_loss(self) -> tf.keras.losses.Loss:
        losses = _tfr_losses()
        return losses.PairwiseLogisticLoss(
            reduction=_REDUCTION, lambda_weight=losses.NDCGLambdaWeightV2()
        )


@tf.keras.utils.register_keras_serializable(package="lcron")
class ArfLoss(CascadeLoss):
    """ARF: each stage maximises its own relaxed Recall, assuming the downstream is ideal.

    Wang et al. (WWW 2024), "Adaptive neural ranking framework: toward maximized business goal
    for cascade ranking systems". Stage s keeps its top-``stage_keep[s]``; with an ideal
    downstream its contribution to the end-to-end recall is its own Recall@gt@k_s. Relaxed with
    the same differentiable top-k as LCRON (``lcron.keep_and_drop_probabilities``):
      L_s = mean_b sum_i m_i y_i (-log(p_s(i) + eps)) / max(sum_i m_i y_i, 1)
    i.e. the log of each ground-truth item's probability to be kept; stages are independent.
    ARF-v2 (:class:`ArfV2Loss`) adds the negatives.

    Args:
      sort_op, tau: the differentiable sort (as LCRON).
      stage_keep: each stage's cut-off (RecFlow: 30, 20).
    """

    method = "arf"

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        sort_op: str = sorting.NEURAL_SORT,
        tau: float = 50.0,
        stage_keep: Sequence[int] = (30, 20),
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages=num_stages, gt_num=gt_num, **kwargs)
        if sort_op not in sorting.SORT_OPS:
            raise ValueError(f"{type(self).__name__}: sort_op must be one of {sorting.SORT_OPS}")
        self.sort_op = sort_op
        self.tau = float(tau)
        self.stage_keep = _check_keep(type(self).__name__, stage_keep, self.num_stages)

    def _stage_term(self, perm: tf.Tensor, y: tf.Tensor, mask: tf.Tensor, k: int) -> tf.Tensor:
        keep, _ = lcron.keep_and_drop_probabilities(perm, k)
        positives = y * mask
        per_request = tf.reduce_sum(-tf.math.log(keep + lcron.EPS) * positives, axis=-1)
        per_request /= tf.maximum(tf.reduce_sum(positives, axis=-1), 1.0)
        return tf.reduce_mean(per_request)

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        y = self.ground_truth(labels, mask)
        terms = {}
        for name, logits, k in zip(self.stage_names, stage_logits, self.stage_keep, strict=True):
            perm = sorting.permutation_matrix(logits, mask, sort_op=self.sort_op, tau=self.tau)
            terms[f"l_{self.method}_{name}"] = self._stage_term(perm, y, mask, k)
        terms["loss"] = tf.add_n(list(terms.values()))
        return terms

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(sort_op=self.sort_op, tau=self.tau, stage_keep=self.stage_keep)
        return config


@tf.keras.utils.register_keras_serializable(package="lcron")
class ArfV2Loss(ArfLoss):
    """ARF-v2: ARF's relaxed Recall@k_s per stage plus the negatives' drop term.

    Per stage, the full relaxed top-k cross-entropy at the stage's own cut-off k_s:
      L_s = L_single(P_s, y, k = stage_keep[s])   (``lcron.single_stage_loss``)
    so each stage is also pushed to drop non-ground-truth items; still no interaction between
    stages (LCRON with only L_single, at the serving cut-offs rather than gt_num).
    """

    method = "arf_v2"

    def _stage_term(self, perm: tf.Tensor, y: tf.Tensor, mask: tf.Tensor, k: int) -> tf.Tensor:
        return lcron.single_stage_loss(perm, y, mask, k)
