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

Three stages (``three_stage/``, ``dataset3.py``): five blocks, rerank_pos (the ground truth,
``30 - rerank_index``), rerank_neg, rank_neg, coarse_neg, prerank_neg (8, 7, 6, 5); our graded
labels are then 4 + (G - rerank_index) / G, 3, 2, 1, 0. In general a cascade of S stages has
S + 2 groups (``num_groups``): the ground truth, then the negatives, worst last.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

NUM_GROUPS = 4  # two stages
RANK_POS, RANK_NEG, COARSE_NEG, PRERANK_NEG = range(NUM_GROUPS)  # block order, best first
# The benchmark's labels: max_rank_index - rank_index, with max_rank_index 30 and the default
# rank_index of the negative groups 23, 24 and 25 (dataset2.py, rank_offset 0; dataset3.py adds
# rerank_neg at 22).
MAX_RANK_INDEX = 30.0
NEGATIVE_LABELS = (7.0, 6.0, 5.0)  # rank_neg, coarse_neg, prerank_neg


def negative_labels(num_groups: int) -> tuple[float, ...]:
    """The benchmark's labels of the negative blocks, best first: (7, 6, 5) for four groups,
    (8, 7, 6, 5) for five (30 minus the default rank_index 22, 23, 24, 25)."""
    return tuple(float(4 + num_groups - 1 - i) for i in range(num_groups - 1))


def groups_for_stages(num_stages: int) -> int:
    """Stage groups of an S-stage benchmark list: S + 2 (four for two stages, five for three)."""
    return num_stages + 2


@dataclasses.dataclass(frozen=True)
class BenchmarkLists:
    """One batch in the benchmark's layout (N = 4 G positions per request).

    Attributes:
      index: [batch, N] int32, our list slot at each benchmark position (N = num_groups G).
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
    num_groups: int = NUM_GROUPS

    @property
    def size(self) -> int | tf.Tensor:
        """N = num_groups G, the benchmark's list size (40 for two stages, 50 for three)."""
        return self.num_groups * self.group_size

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


def resolve_group_size(
    list_size: int | None, group_size: int | None, num_groups: int = NUM_GROUPS
) -> int | tf.Tensor | None:
    """The configured G, or list_size // num_groups (the ingestion's default) when None."""
    if group_size is not None:
        return int(group_size)
    if list_size is not None:
        return int(list_size) // num_groups
    return None


def group_of_label(labels: tf.Tensor, num_groups: int = NUM_GROUPS) -> tf.Tensor:
    """Block of each candidate from its graded label: the best group 0, ..., the worst
    num_groups - 1 (int32); our label's integer part is the group's code, best highest."""
    top = float(num_groups - 1)
    code = tf.clip_by_value(tf.floor(labels + 0.5), 0.0, top)
    return num_groups - 1 - tf.cast(code, tf.int32)


def benchmark_lists(
    labels: tf.Tensor,
    mask: tf.Tensor,
    group_size: int | None = None,
    num_groups: int = NUM_GROUPS,
) -> BenchmarkLists:
    """Rebuilds the benchmark's block layout of every request (see the module docstring).

    Args:
      labels: [batch, list_size] our graded labels.
      mask: [batch, list_size] 0/1, 1 for a real candidate.
      group_size: G; None means list_size // num_groups.
      num_groups: stage groups (4 for two stages, 5 for three: ``groups_for_stages``).

    Returns:
      The batch in the benchmark's layout.

    Raises:
      ValueError: the list is shorter than num_groups G.
      tf.errors.InvalidArgumentError (at run time): a request has fewer padding slots than its
        short groups need (it holds more candidates than the benchmark's layout can).
    """
    labels = tf.cast(labels, tf.float32)
    valid = tf.cast(mask, tf.bool)
    static_size = labels.shape[-1]
    g = resolve_group_size(static_size, group_size, num_groups)
    list_size = tf.shape(labels)[-1]
    if g is None:
        g = list_size // num_groups
    if isinstance(g, int):
        if g < 1:
            raise ValueError(f"benchmark layout: group_size must be >= 1, got {g}")
        if static_size is not None and num_groups * g > static_size:
            raise ValueError(
                f"benchmark layout: {num_groups} groups of {g} do not fit a list of {static_size}"
            )
    n = num_groups * g
    # Block 0..3 for a real candidate, 4 for padding; its rank among the slots of its block.
    block = tf.where(valid, group_of_label(labels, num_groups), num_groups)
    one_hot = tf.one_hot(block, num_groups + 1, dtype=tf.int32)  # [B, L, groups + 1]
    within = tf.reduce_sum(tf.cumsum(one_hot, axis=1, exclusive=True) * one_hot, axis=-1)
    real_per_group = tf.reduce_sum(one_hot[:, :, :num_groups], axis=1)  # [B, groups]
    kept = tf.minimum(real_per_group, g)
    deficit = g - kept  # padding slots each block needs
    deficit_end = tf.cumsum(deficit, axis=-1)
    deficit_start = deficit_end - deficit
    # The p-th padding slot goes to the first block whose deficits are not yet covered.
    pad_block = tf.reduce_sum(
        tf.cast(deficit_end[:, tf.newaxis, :] <= within[:, :, tf.newaxis], tf.int32), axis=-1
    )
    pad_group = tf.minimum(pad_block, num_groups - 1)
    pad_dest = (
        pad_group * g
        + tf.gather(kept, pad_group, batch_dims=1)
        + within
        - tf.gather(deficit_start, pad_group, batch_dims=1)
    )
    real_group = tf.minimum(block, num_groups - 1)
    real_dest = real_group * g + within
    unused = n + tf.range(list_size)[tf.newaxis, :]  # overflow and spare padding: past the end
    dest = tf.where(
        valid,
        tf.where(within < g, real_dest, unused),
        tf.where(pad_block < num_groups, pad_dest, unused),
    )
    order = tf.argsort(dest, axis=-1, stable=True)[:, :n]
    filled = tf.gather(dest, order, batch_dims=1)
    check = tf.debugging.assert_equal(
        filled,
        tf.broadcast_to(tf.range(n)[tf.newaxis, :], tf.shape(filled)),
        message=(
            "benchmark layout: a request has fewer padding slots than its short stage groups "
            "need (it holds more candidates than its groups of group_size); the baseline losses "
            "need lists laid out as the ingestion writes them (LossConfig.group_size)"
        ),
    )
    with tf.control_dependencies([check]):
        order = tf.identity(order)
    bench_mask = tf.cast(tf.gather(valid, order, batch_dims=1), tf.float32)
    position_block = tf.range(n)[tf.newaxis, :] // g
    rank_index = tf.round(
        tf.cast(g, tf.float32) * (float(num_groups) - tf.gather(labels, order, batch_dims=1))
    )
    rank_pos_label = MAX_RANK_INDEX - rank_index * bench_mask  # a padded slot: rank_index 0
    negative = tf.gather(
        tf.constant(negative_labels(num_groups)), tf.maximum(position_block - 1, 0)
    )
    bench_labels = tf.where(position_block == RANK_POS, rank_pos_label, negative)
    return BenchmarkLists(
        index=order,
        mask=bench_mask,
        labels=bench_labels,
        count=tf.reduce_sum(bench_mask, axis=-1),
        group_size=g,
        num_groups=num_groups,
    )
