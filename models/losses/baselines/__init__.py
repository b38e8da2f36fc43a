"""The LCRON paper's baselines (its Table 2) as the authors' benchmark code defines them.

Reference: kwai/LCRON, ``deep_components/loss/two_stage/*.py`` with the settings of
``deep_components/run_train2.py`` and ``two_stage/*.sh`` (read, not copied: the code is
CC BY-SA). One module per method; each class is a :class:`models.losses.CascadeLoss` for the
two-stage cascade (retrieval first, ranking second) selectable by name:

  bce            ``bce.BceLoss``            stage-wise pointwise BCE
  icc            ``icc.IccLoss``            gated ensemble score, pairwise loss (Gallagher 2019)
  rankflow       ``rankflow.RankFlowLoss``  BCE on what retrieval passes + distillation (Qin 2022)
  fs_ranknet     ``fs_ltr.FsRankNetLoss``   full-stage RankNet across stage groups (Zheng 2024)
  fs_lambdaloss  ``fs_ltr.FsLambdaLossLoss`` full-stage LambdaLoss (Zheng 2024)
  arf, arf_v2    ``arf.ArfLoss`` / ``ArfV2Loss`` relaxed per-stage Recall + global term (Wang 2024)

Every loss first rebuilds the benchmark's list layout (``layout``: four stage groups of
``group_size`` slots, groups read from the graded labels, never from list positions), then
applies the authors' formulas. Where the authors' code has an accident (a mask it ignores,
padding that enters a sort, a cut-off that is the other stage's), ``variant="benchmark"`` (the
default, what the paper's numbers come from) keeps it and ``variant="clean"`` fixes it; each
class's docstring names its accidents.
"""

from models.losses.baselines.arf import ArfLoss, ArfV2Loss
from models.losses.baselines.bce import BceLoss
from models.losses.baselines.common import BENCHMARK, CLEAN, VARIANTS, BaselineLoss
from models.losses.baselines.fs_ltr import FsLambdaLossLoss, FsRankNetLoss
from models.losses.baselines.icc import IccLoss
from models.losses.baselines.layout import BenchmarkLists, benchmark_lists
from models.losses.baselines.rankflow import RankFlowLoss

__all__ = [
    "BENCHMARK",
    "CLEAN",
    "VARIANTS",
    "ArfLoss",
    "ArfV2Loss",
    "BaselineLoss",
    "BceLoss",
    "BenchmarkLists",
    "FsLambdaLossLoss",
    "FsRankNetLoss",
    "IccLoss",
    "RankFlowLoss",
    "benchmark_lists",
]
