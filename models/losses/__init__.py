"""Cascade losses: LCRON (Wang et al., ICML 2025) and the paper's baselines, as Keras layers.

Public API:
  get(config, num_stages) -> CascadeLoss     the loss layer named by ``LossConfig.method``
  lcron_loss_terms(...)                      LCRON's three terms for two stages (functional)
  lcron_cascade_terms(...)                   the same for any number of stages
  neural_sort / soft_sort                    relaxed permutation matrices
  top_k_and_rest_sums                        their top-k / other row sums without the matrix
  keep_and_drop_from_scores                  a stage's relaxed top-k probabilities, any path
  ground_truth_indicator / top_k_indicator   hard selections (deterministic ties)
  corpus_softmax_loss(...)                   retrieval's sampled softmax over the batch's items

Modules: ``sorting`` (differentiable sorts), ``targets`` (ground truth), ``lcron`` (LCRON terms
and layer), ``lcron_blocked`` (the memory-linear path), ``baselines`` (BCE, ICC, RankFlow,
FS-RankNet, FS-LambdaLoss, ARF, ARF-v2 as the authors' benchmark code defines them, one module
per method), ``registry`` (``get``), ``base`` (the ``CascadeLoss`` interface), ``corpus``
(retrieval's corpus term, added to a cascade loss by ``LossConfig.corpus_weight``).
"""

from models.losses.base import CascadeLoss
from models.losses.baselines import (
    ArfLoss,
    ArfV2Loss,
    BceLoss,
    FsLambdaLossLoss,
    FsRankNetLoss,
    IccLoss,
    RankFlowLoss,
)
from models.losses.corpus import corpus_softmax_loss
from models.losses.lcron import (
    LcronLoss,
    end_to_end_loss,
    keep_and_drop_from_scores,
    keep_and_drop_probabilities,
    lcron_cascade_terms,
    lcron_loss_terms,
    single_stage_loss,
    survival_lower_bound,
    survival_lower_bound_from_perms,
)
from models.losses.lcron_blocked import top_k_and_rest_sums
from models.losses.registry import LOSSES, get
from models.losses.sorting import neural_sort, permutation_matrix, soft_sort
from models.losses.targets import ground_truth_indicator, stage_names, top_k_indicator

__all__ = [
    "LOSSES",
    "ArfLoss",
    "ArfV2Loss",
    "BceLoss",
    "CascadeLoss",
    "FsLambdaLossLoss",
    "FsRankNetLoss",
    "IccLoss",
    "LcronLoss",
    "RankFlowLoss",
    "corpus_softmax_loss",
    "end_to_end_loss",
    "get",
    "ground_truth_indicator",
    "keep_and_drop_from_scores",
    "keep_and_drop_probabilities",
    "lcron_cascade_terms",
    "lcron_loss_terms",
    "neural_sort",
    "permutation_matrix",
    "single_stage_loss",
    "soft_sort",
    "stage_names",
    "survival_lower_bound",
    "survival_lower_bound_from_perms",
    "top_k_and_rest_sums",
    "top_k_indicator",
]
