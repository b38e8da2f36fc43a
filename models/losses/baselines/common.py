"""What every baseline shares: two stages, the benchmark layout, the benchmark / clean switch."""

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
    """A baseline of the LCRON paper for the two-stage cascade, as the authors' code defines it.

    Subclasses implement :meth:`benchmark_terms` over the stages' logits in the benchmark's
    layout (``layout.BenchmarkLists``: [batch, N] with N = 4 ``group_size``, four stage groups).

    Args:
      num_stages: must be 2 (retrieval, ranking): the benchmark's two-stage setting.
      gt_num: size of the ground-truth set (the rank_pos group holds it).
      group_size: slots per stage group; None means list_size // 4 (the ingestion's layout).
      variant: "benchmark" (default: the authors' code, accidents included) or "clean" (the
        accidents named in the subclass's docstring fixed, everything else unchanged).
      stage_keep: how many items each stage passes on (RecFlow: 30, then 20).
    """

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
        if self.num_stages != 2:
            raise ValueError(
                f"{name}: the benchmark defines the baselines for a two-stage cascade "
                f"(retrieval, ranking), got num_stages={self.num_stages}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {variant!r}")
        if group_size is not None and group_size < 1:
            raise ValueError(f"{name}: group_size must be >= 1, got {group_size}")
        if len(stage_keep) < 2 or min(stage_keep) < 1:
            raise ValueError(f"{name}: stage_keep needs two positive cut-offs, got {stage_keep}")
        self.group_size = None if group_size is None else int(group_size)
        self.variant = variant
        self.stage_keep = tuple(int(k) for k in stage_keep[:2])

    @property
    def clean(self) -> bool:
        return self.variant == CLEAN

    def compute_terms(
        self, stage_logits: list[tf.Tensor], labels: tf.Tensor, mask: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        lists = layout.benchmark_lists(labels, mask, self.group_size)
        retrieval, ranking = (lists.gather(logits) for logits in stage_logits)
        return self.benchmark_terms(retrieval, ranking, lists)

    def benchmark_terms(
        self, retrieval: tf.Tensor, ranking: tf.Tensor, lists: layout.BenchmarkLists
    ) -> dict[str, tf.Tensor]:
        """{"loss": total, <term>: scalar}; logits [batch, N] in the benchmark's layout."""
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
