"""What every baseline shares: the benchmark layout (two or three stages), the benchmark / clean
switch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from models.losses.base import CascadeLoss
from models.losses.baselines import layout

BENCHMARK = "benchmark"
CLEAN = "clean"
VARIANTS = (BENCHMARK, CLEAN)


def bce_with_logits(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Element-wise binary cross-entropy of sigmoid(logits) against 0/1 targets."""
    targets = tf.broadcast_to(tf.cast(targets, logits.dtype), tf.shape(logits))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)


def batch_size(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.shape(x)[0], tf.float32)


def numel(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.size(x), tf.float32)


class BaselineLoss(CascadeLoss):
    """A baseline of the LCRON paper, as the authors' code defines it for two stages
    (``two_stage/``) and, where a subclass has it, three (``three_stage/``).

    Subclasses implement :meth:`benchmark_terms` over the two stages' logits in the benchmark's
    layout (``layout.BenchmarkLists``: [batch, N] with N = 4 ``group_size``, four stage groups)
    and, when ``stage_counts`` holds 3, :meth:`cascade_terms` over the three stages' logits in
    the three-stage layout (N = 5 ``group_size``: rerank_pos, rerank_neg, rank_neg, coarse_neg,
    prerank_neg).

    Args:
      num_stages: one of the subclass's ``stage_counts`` (2: retrieval, ranking; 3: retrieval,
        pre-ranking, ranking); any other is refused by name.
      gt_num: size of the ground-truth set (the rank_pos group holds it).
      group_size: slots per stage group; None means list_size // 4 (the ingestion's layout).
      variant: "benchmark" (default: the authors' code, accidents included) or "clean" (the
        accidents named in the subclass's docstring fixed, everything else unchanged).
      stage_keep: how many items each stage passes on (RecFlow: 30, then 20; three stages:
        40, 30, 20).
    """

    #: Stage counts with a reference form (the authors' two_stage/ and three_stage/ code);
    #: ``models.config.LOSS_STAGE_COUNTS`` names the same (a test checks).
    stage_counts: tuple[int, ...] = (2,)

    def __init__(
        self,
        num_stages: int = 2,
        gt_num: int = 10,
        group_size: int | None = None,
        variant: str = BENCHMARK,
        stage_keep: Sequence[int] = (30, 20),
        **kwargs: Any,
    ) -> None:
        super().__init__(num_stages=num_stages, gt_num=gt_num, **kwargs)
        name = type(self).__name__
        if self.num_stages not in self.stage_counts:
            raise ValueError(
                f"{name} ({self.method!r}): the benchmark defines it for {list(self.stage_counts)}"
                f" stages, got num_stages={self.num_stages}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {variant!r}")
        if group_size is not None and group_size < 1:
            raise ValueError(f"{name}: group_size must be >= 1, got {group_size}")
        if len(stage_keep) < self.num_stages or min(stage_keep) < 1:
            raise ValueError(
                f"{name}: stage_keep needs {self.num_stages} positive cut-offs, got {stage_keep}"
            )
        self.group_size = None if group_size is None else int(group_size)
        self.variant = variant
        self.stage_keep = tuple(int(k) for k in stage_keep[: self.num_stages])
        self.num_groups = layout.groups_for_stages(self.num_stages)

    @property
    def clean(self) -> bool:
        return self.variant == CLEAN

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        lists = layout.benchmark_lists(labels, mask, self.group_size, self.num_groups)
        gathered = [lists.gather(logits) for logits in stage_logits]
        if self.num_stages == 2:
            return self.benchmark_terms(gathered[0], gathered[1], lists)
        return self.cascade_terms(gathered, lists)

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        """{"loss": total, <term>: scalar}; logits [batch, N] in the benchmark's layout."""
        raise NotImplementedError

    def cascade_terms(
        self, stage_logits: list[tf.Tensor], lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        """Three (or more) stages: {"loss": total, <term>: scalar}; ``stage_logits`` one
        [batch, N] tensor per stage, first (retrieval) first, in the benchmark's layout."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(group_size=self.group_size, variant=self.variant, stage_keep=self.stage_keep)
        return config


def cut(k: int, size: int | tf.Tensor) -> int | tf.Tensor:
    """min(k, size) for a Python or tensor size (a cut-off never exceeds the list)."""
    if isinstance(size, int):
        return min(k, size)
    return tf.minimum(k, size)


def kth_largest(values: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
    """[batch, 1]: the k-th largest value of each row (differentiable w.r.t. that value)."""
    top = tf.math.top_k(values, k=k).values
    return top[:, k - 1 :][:, :1]


def mask_out(values: tf.Tensor, mask: tf.Tensor, fill: float = -1e9) -> tf.Tensor:
    """Values with masked positions replaced by ``fill`` (no gradient reaches them)."""
    return tf.where(mask > 0, values, tf.fill(tf.shape(values), fill))
