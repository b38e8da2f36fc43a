"""Our lists in the benchmark's layout: four stage groups of ``group_size`` slots each.

The LCRON authors' baselines (kwai/LCRON, ``deep_components/loss/two_stage``) read a request as
four blocks of ``G`` slots (``G`` = 10 on RecFlow), best stage group first::

    position  0 ..  G-1   rank_pos     (real items first, then padding slots)
              G .. 2G-1   rank_neg
             2G .. 3G-1   coarse_neg
             3G .. 4G-1   prerank_neg

Several of their losses depend on that layout: a padded slot still has the logit the model
gives the padding features and the label of its block, some masks are ignored, and some masks
are positional. Our examples are laid out differently (real candidates in any order, padding
slots at the tail, no group of their own) and may be shuffled, so list positions mean nothing
here. :func:`benchmark_lists` rebuilds the benchmark's layout from what is position-free:

- a real candidate's group comes from its graded label (``models.features``: prerank_neg 0,
  coarse_neg 1, rank_neg 2, rank_pos 3 + (G - rank_index) / G), so the baselines need the
  ground-truth labels (``label_mode="ground_truth"``), not feedback labels;
- within a group, real candidates keep their relative list order (the benchmark's order inside
  a group is the log's, equally arbitrary), and only the first ``G`` are kept, as the
  benchmark's dataset keeps the first 10 of each group;
- each group short of ``G`` real candidates gets padding slots to fill its block. All padding
  slots of a request have the same features, hence the same logit, so which of our padding
  slots fills which block changes no value, and the gradient reaching the model (the sum over
  padding slots) is the benchmark's.

The authors' labels (``dataset2.py``) are ``30 - rank_index`` for rank_pos (a padded rank_pos
slot has rank_index 0, so label 30), and 7, 6, 5 for rank_neg, coarse_neg and prerank_neg
(padded slots too). :func:`benchmark_lists` returns them, recovering rank_index from our label.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

NUM_GROUPS = 4
RANK_POS, RANK_NEG, COARSE_NEG, PRERANK_NEG = range(NUM_GROUPS)  # block order, best first
# The benchmark's labels: max_rank_index - rank_index, with max_rank_index 30 and the default
# rank_index of the negative groups 23, 24 and 25 (dataset2.py, rank_offset 0).
MAX_RANK_INDEX = 30.0
NEGATIVE_LABELS = (7.0, 6.0, 5.0)  # rank_neg, coarse_neg, prerank_neg


@dataclasses.dataclass(frozen=True)
class BenchmarkLists:
    """One batch in the benchmark's layout (N = 4 G positions per request).

    Attributes:
      index: [batch, N] int32, our list slot at each benchmark position.
      mask: [batch, N] float32, 1 for a real candidate (the benchmark's four group masks,
        concatenated), 0 for a padding slot.
      labels: [batch, N] float32, the benchmark's labels (30 - rank_index, 7, 6, 5).
      count: [batch] float32, real candidates per request (the sum of ``mask``).
      group_size: G, a Python int or a scalar int32 tensor.
    """

    index: tf.Tensor
    mask: tf.Tensor
    labels: tf.Tensor
    count: tf.Tensor
    group_size: int | tf.Tensor

    @property
    def size(self) -> int | tf.Tensor:
        """N = 4 G, the benchmark's list size."""
        return NUM_GROUPS * self.group_size

    def gather(self, values: tf.Tensor) -> tf.Tensor:
        """[batch, list_size] values of our slots -> [batch, N] in the benchmark's layout."""
        return tf.gather(values, self.index, batch_dims=1)

    def block(self, group: int) -> tuple[int | tf.Tensor, int | tf.Tensor]:
        """(start, end) positions of a group's block."""
        return group * self.group_size, (group + 1) * self.group_size

    def in_groups(self, *groups: int) -> tf.Tensor:
        """[1, N] float32: 1 at the positions of the given groups' blocks (real or padding)."""
        block_of = tf.range(self.size) // self.group_size
        hit = tf.reduce_any(tf.stack([tf.equal(block_of, g) for g in groups]), axis=0)
        return tf.cast(hit, tf.float32)[tf.newaxis, :]


def resolve_group_size(list_size: int | None, group_size: int | None) -> int | tf.Tensor | None:
    """The configured G, or list_size // 4 (the ingestion's default) when None."""
    if group_size is not None:
        return int(group_size)
    if list_size is not None:
        return int(list_size) // NUM_GROUPS
    return None


def group_of_label(labels: tf.Tensor) -> tf.Tensor:
    """Block of each candidate from its graded label: rank_pos 0, ..., prerank_neg 3 (int32)."""
    code = tf.clip_by_value(tf.floor(labels + 0.5), 0.0, 3.0)  # 3 rank_pos .. 0 prerank_neg
    return 3 - tf.cast(code, tf.int32)


def benchmark_lists(
    labels: tf.Tensor, mask: tf.Tensor, group_size: int | None = None
) -> BenchmarkLists:
    """Rebuilds the benchmark's four-block layout of every request (see the module docstring).

    Args:
      labels: [batch, list_size] our graded labels.
      mask: [batch, list_size] 0/1, 1 for a real candidate.
      group_size: G; None means list_size // 4.

    Returns:
      The batch in the benchmark's layout.

    Raises:
      ValueError: the list is shorter than 4 G.
      tf.errors.InvalidArgumentError (at run time): a request has fewer padding slots than its
        short groups need (it holds more candidates than the benchmark's layout can).
    """
    labels = tf.cast(labels, tf.float32)
    valid = tf.cast(mask, tf.bool)
    static_size = labels.shape[-1]
    g = resolve_group_size(static_size, group_size)
    list_size = tf.shape(labels)[-1]
    if g is None:
        g = list_size // NUM_GROUPS
    if isinstance(g, int):
        if g < 1:
            raise ValueError(f"benchmark layout: group_size must be >= 1, got {g}")
        if static_size is not None and NUM_GROUPS * g > static_size:
            raise ValueError(
                f"benchmark layout: {NUM_GROUPS} groups of {g} do not fit a list of {static_size}"
            )
    n = NUM_GROUPS * g
    # Block 0..3 for a real candidate, 4 for padding; its rank among the slots of its block.
    block = tf.where(valid, group_of_label(labels), NUM_GROUPS)
    one_hot = tf.one_hot(block, NUM_GROUPS + 1, dtype=tf.int32)  # [B, L, 5]
    within = tf.reduce_sum(tf.cumsum(one_hot, axis=1, exclusive=True) * one_hot, axis=-1)
    real_per_group = tf.reduce_sum(one_hot[:, :, :NUM_GROUPS], axis=1)  # [B, 4]
    kept = tf.minimum(real_per_group, g)
    deficit = g - kept  # padding slots each block needs
    deficit_end = tf.cumsum(deficit, axis=-1)
    deficit_start = deficit_end - deficit
    # The p-th padding slot goes to the first block whose deficits are not yet covered.
    pad_block = tf.reduce_sum(
        tf.cast(deficit_end[:, tf.newaxis, :] <= within[:, :, tf.newaxis], tf.int32), axis=-1
    )
    pad_group = tf.minimum(pad_block, NUM_GROUPS - 1)
    pad_dest = (
        pad_group * g
        + tf.gather(kept, pad_group, batch_dims=1)
        + within
        - tf.gather(deficit_start, pad_group, batch_dims=1)
    )
    real_group = tf.minimum(block, NUM_GROUPS - 1)
    real_dest = real_group * g + within
    unused = n + tf.range(list_size)[tf.newaxis, :]  # overflow and spare padding: past the end
    dest = tf.where(
        valid,
        tf.where(within < g, real_dest, unused),
        tf.where(pad_block < NUM_GROUPS, pad_dest, unused),
    )
    order = tf.argsort(dest, axis=-1, stable=True)[:, :n]
    filled = tf.gather(dest, order, batch_dims=1)
    check = tf.debugging.assert_equal(
        filled,
        tf.broadcast_to(tf.range(n)[tf.newaxis, :], tf.shape(filled)),
        message=(
            "benchmark layout: a request has fewer padding slots than its short stage groups "
            "need (it holds more candidates than 4 groups of group_size); the baseline losses "
            "need lists laid out as the ingestion writes them (LossConfig.group_size)"
        ),
    )
    with tf.control_dependencies([check]):
        order = tf.identity(order)
    bench_mask = tf.cast(tf.gather(valid, order, batch_dims=1), tf.float32)
    position_block = tf.range(n)[tf.newaxis, :] // g
    rank_index = tf.round(tf.cast(g, tf.float32) * (4.0 - tf.gather(labels, order, batch_dims=1)))
    rank_pos_label = MAX_RANK_INDEX - rank_index * bench_mask  # a padded slot: rank_index 0
    negative = tf.gather(tf.constant(NEGATIVE_LABELS), tf.maximum(position_block - 1, 0))
    bench_labels = tf.where(position_block == RANK_POS, rank_pos_label, negative)
    return BenchmarkLists(
        index=order,
        mask=bench_mask,
        labels=bench_labels,
        count=tf.reduce_sum(bench_mask, axis=-1),
        group_size=g,
    )
