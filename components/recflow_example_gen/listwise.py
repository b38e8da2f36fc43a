"""One list-wise ``tf.Example`` per request, from the request's valid log rows.

The list (length ``list_size``, default 40) holds up to ``group_size`` candidates of each
configured stage group (``ListConfig.groups``, best first; default rank_pos, rank_neg,
coarse_neg, prerank_neg, the paper's two-stage setting; its three-stage setting splits rank_pos
into rerank_pos and rerank_neg: 50 candidates in five groups). Within a group the first by its
position (``rerank_index`` for the re-ranking groups, ``rank_index`` otherwise) when it has one,
then ``video_id``, then the row's position in the logs. The first group is the ground truth. The
real candidates come first (``mask`` 1) in a deterministic per-request shuffle, padding fills
the tail (``mask`` 0): list position carries no information about the label, so neither a model
nor a metric that breaks ties by position can profit from it. The shuffle orders a request's
candidates by a keyed hash of (request_id, video_id) (``candidate_order``): the same in every
process, run and Python hash seed, and independent of the order of the rows in the logs.

Rows are dropped here only with a reason that is counted:

- dead letters: a second row with the same ``(request_id, video_id)`` (``duplicate``); a row
  whose context (user, device, time, behaviour sequence...) disagrees with the request's
  majority (``context_mismatch``);
- valid rows left out by design (``rows_not_in_examples``): beyond ``group_size`` in their
  group (``beyond_group_size:<group>``), in no configured group (``not_in_groups``: e.g. a
  rank_pos row with neither re-ranking flag when the groups split rank_pos), or in a request
  without ground truth (no row of the first group: ``request_without_ground_truth``).

Every feature has a fixed length, so downstream parses with ``FixedLenFeature`` and zeros are
always written explicitly (unlike the stock Parquet executor, tensorflow/tfx#6407).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from components.recflow_example_gen.rows import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    LIST_COLUMNS,
    SCALAR_COLUMNS,
    dead_letter,
)
from models import features

LABEL_MODES = ("ground_truth", "feedback")
# Best group first (the reverse of the stage codes' order): the default groups.
GROUPS_BEST_FIRST: tuple[str, ...] = tuple(
    sorted(features.STAGE_CODES, key=features.STAGE_CODES.get, reverse=True)
)
# The paper's three-stage groups (RecFlow, kwai/LCRON's dataset3): rank_pos split by the
# re-ranking stage's flags.
THREE_STAGE_GROUPS: tuple[str, ...] = (
    "rerank_pos",
    "rerank_neg",
    "rank_neg",
    "coarse_neg",
    "prerank_neg",
)
# Every group a list may be made of: the log flag that marks its rows.
KNOWN_GROUPS: tuple[str, ...] = ("rerank_pos", "rerank_neg", *GROUPS_BEST_FIRST)
# The re-ranking groups are subsets of rank_pos (rows.py checks the flags).
RERANK_GROUPS: tuple[str, ...] = ("rerank_pos", "rerank_neg")
# The position a group's rows are ordered by (and the ground truth graded by).
POSITION_COLUMN: dict[str, str] = {
    "rerank_pos": "rerank_index",
    "rerank_neg": "rerank_index",
    **{g: "rank_index" for g in GROUPS_BEST_FIRST},
}
# Context columns that every row of a request must agree on (request_id is the key).
CONTEXT_CHECKED: tuple[str, ...] = tuple(c for c in features.CONTEXT_FEATURES if c != "request_id")
# Padding of candidate features: ids PAD_ID; times and durations 0 (so log1p stays finite).
ITEM_PAD_VALUES: dict[str, int] = {
    name: (0 if name in ("upload_timestamp", "duration") else features.PAD_ID)
    for name in features.ITEM_FEATURES
}


@dataclasses.dataclass(frozen=True)
class ListConfig:
    """Shape and labels of the list-wise example.

    Attributes:
      list_size: candidates per example (fixed length of every candidate feature).
      group_size: candidates kept per stage group; default ``list_size // len(groups)``.
      label_mode: "ground_truth" (the paper's graded label, see ``models.features``) or
        "feedback" (``label`` = ``effective_view`` of exposed candidates, 0 otherwise).
      groups: the stage groups, best first, by their log flag (``KNOWN_GROUPS``); the first is
        the ground truth. Default: rank_pos, rank_neg, coarse_neg, prerank_neg (two stages);
        ``THREE_STAGE_GROUPS`` for the paper's three-stage setting. rank_pos and the
        re-ranking groups (its subsets) exclude each other.
    """

    list_size: int = features.LIST_SIZE
    group_size: int | None = None
    label_mode: str = "ground_truth"
    groups: tuple[str, ...] = GROUPS_BEST_FIRST

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode {self.label_mode!r} not in {LABEL_MODES}")
        unknown = [g for g in self.groups if g not in KNOWN_GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"groups: unknown group(s) {unknown}; known: {list(KNOWN_GROUPS)}")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"groups: a group is named twice in {list(self.groups)}")
        if "rank_pos" in self.groups and set(RERANK_GROUPS) & set(self.groups):
            raise ValueError(
                f"groups: {list(self.groups)} name rank_pos and a re-ranking group, which is a"
                " subset of rank_pos; use either rank_pos or rerank_pos / rerank_neg"
            )
        if self.list_size < 1 or self.resolved_group_size < 1:
            raise ValueError(f"list_size {self.list_size} / group_size must be positive")
        if self.resolved_group_size * len(self.groups) > self.list_size:
            raise ValueError(
                f"group_size {self.resolved_group_size} x {len(self.groups)} groups "
                f"exceeds list_size {self.list_size}"
            )

    @property
    def resolved_group_size(self) -> int:
        return self.group_size or self.list_size // len(self.groups)

    def stage_code(self, group: str) -> int:
        """The ``stage`` feature's code of a group: len(groups) - 1 for the best, 0 the worst."""
        return len(self.groups) - 1 - self.groups.index(group)


SHUFFLE_KEY = b"lcron-list-order-v1"


def candidate_order(request_id: int, video_ids: Iterable[int]) -> list[int]:
    """Positions of the candidates ``video_ids`` of one request in its example: sorted by a
    keyed BLAKE2b hash of (request_id, video_id), a stable pseudo-random permutation."""

    def key(video_id: int) -> bytes:
        message = struct.pack("<qq", int(request_id), int(video_id))
        return hashlib.blake2b(message, digest_size=8, key=SHUFFLE_KEY).digest()

    videos = list(video_ids)
    return sorted(range(len(videos)), key=lambda i: (key(videos[i]), i))


def graded_label(
    stage: str, rank_index: int, group_size: int, groups: tuple[str, ...] = GROUPS_BEST_FIRST
) -> float:
    """The paper's graded label: the group's code (``ListConfig.stage_code``: prerank_neg 0,
    coarse_neg 1, ..., the best group len(groups) - 1), plus (group_size - position) /
    group_size for the ground-truth group (the first), whose items are ordered by their
    position (``rank_index``, or ``rerank_index`` for rerank_pos). With the default groups:
    rank_pos 3 + (10 - rank_index) / 10, rank_neg 2, coarse_neg 1, prerank_neg 0. A position
    past the group, or none (-1), counts 0.
    """
    code = float(len(groups) - 1 - groups.index(stage))
    if stage == groups[0] and rank_index >= 0:  # no position: no bonus (never above 1)
        return code + max(group_size - rank_index, 0) / group_size
    return code


@dataclasses.dataclass
class RequestResult:
    """What one request yields: an example (or None), dead letters and counts."""

    example: bytes | None
    dead_letters: list[dict[str, Any]]
    counts: collections.Counter


def _concat(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One request's chunks as columns, in log order (file, then row) whatever the shuffle did."""
    chunks = list(chunks)
    sources = np.concatenate([np.full(len(c["row"]), c["source"], dtype=object) for c in chunks])
    rows = np.concatenate([c["row"] for c in chunks])
    rank_of = {source: r for r, source in enumerate(sorted({c["source"] for c in chunks}))}
    source_rank = np.concatenate([np.full(len(c["row"]), rank_of[c["source"]]) for c in chunks])
    order = np.lexsort((rows, source_rank))
    offsets = np.cumsum([0, *(len(c["seq"]) for c in chunks[:-1])])
    seq_index = np.concatenate([c["seq_index"] + o for c, o in zip(chunks, offsets, strict=False)])
    ints = np.concatenate([c["ints"] for c in chunks])[order]
    floats = np.concatenate([c["floats"] for c in chunks])[order]
    columns = {name: ints[:, i] for i, name in enumerate(INT_COLUMNS)}
    columns.update({name: floats[:, i] for i, name in enumerate(FLOAT_COLUMNS)})
    return {
        "source": sources[order],
        "row": rows[order],
        "columns": columns,
        "seq": np.concatenate([c["seq"] for c in chunks]),  # [u, len(LIST_COLUMNS), SEQ_LEN]
        "seq_index": seq_index[order],
    }


def _sequences(data: dict[str, Any], i: int) -> dict[str, np.ndarray]:
    """Row ``i``'s behaviour sequences, each [SEQ_LEN] padded with PAD_ID."""
    seq = data["seq"][data["seq_index"][i]]
    return {name: seq[k] for k, name in enumerate(LIST_COLUMNS)}


def _record(data: dict[str, Any], i: int) -> dict[str, Any]:
    record = {k: data["columns"][k][i].item() for k in SCALAR_COLUMNS}
    for k, seq in _sequences(data, i).items():
        record[k] = seq[seq != features.PAD_ID].tolist()
    return record


def build_request(
    request_id: int, chunks: Iterable[dict[str, Any]], config: ListConfig
) -> RequestResult:
    """Builds the list-wise example of one request from its chunks of valid rows."""
    data = _concat(chunks)
    cols = data["columns"]
    n = len(data["row"])
    counts: collections.Counter = collections.Counter()
    letters: list[dict[str, Any]] = []
    alive = np.ones(n, dtype=bool)

    def kill(i: int, kind: str, field: str, reason: str) -> None:
        alive[i] = False
        letters.append(
            dead_letter(data["source"][i], data["row"][i], kind, field, reason, _record(data, i))
        )

    # Duplicates: the first copy (in log order) stays.
    first_seen: dict[int, int] = {}
    for i, video in enumerate(cols["video_id"].tolist()):
        if video in first_seen:
            first = f"{data['source'][first_seen[video]]}:{data['row'][first_seen[video]]}"
            kill(i, "duplicate", "video_id", f"duplicate of (request_id, video_id) at {first}")
        else:
            first_seen[video] = i

    # Context: the majority value wins; disagreeing rows are dead letters.
    seq_keys = [tuple(s.tobytes() for s in seq) for seq in data["seq"]]
    canonical: dict[tuple, int] = {}
    seq_ids = np.array([canonical.setdefault(k, len(canonical)) for k in seq_keys])
    context = np.column_stack([*(cols[k] for k in CONTEXT_CHECKED), seq_ids[data["seq_index"]]])
    living = np.flatnonzero(alive)
    majority_row = int(living[0])
    if not (context[living] == context[majority_row]).all():  # rare: find the majority
        tally = collections.Counter(tuple(context[i]) for i in living)
        top = max(tally.values())
        majority_row = next(int(i) for i in living if tally[tuple(context[i])] == top)
        keys = (*CONTEXT_CHECKED, "seq_video_id")
        for i in living:
            differs = np.flatnonzero(context[i] != context[majority_row])
            if len(differs):
                field = keys[differs[0]]
                if field == "seq_video_id":  # name the first sequence column that differs
                    mine, theirs = _sequences(data, i), _sequences(data, majority_row)
                    field = next(k for k in LIST_COLUMNS if (mine[k] != theirs[k]).any())
                kill(
                    i,
                    "context_mismatch",
                    field,
                    f"field '{field}' disagrees with the other rows of request {request_id}",
                )
    counts["rows_dead_lettered"] += n - int(alive.sum())

    def not_in_examples(index: np.ndarray, reason: str) -> None:
        counts["rows_not_in_examples"] += len(index)
        counts[f"not_in_examples:{reason}"] += len(index)

    if not (alive & (cols[config.groups[0]] == 1)).any():
        not_in_examples(np.flatnonzero(alive), "request_without_ground_truth")
        counts["requests_without_ground_truth"] += 1
        return RequestResult(None, letters, counts)

    group_size = config.resolved_group_size
    chosen: list[tuple[int, str]] = []
    grouped = np.zeros(n, dtype=bool)
    for group in config.groups:
        # One group per row: rows.py validates the four base flags (exactly one) and the
        # re-ranking flags (only on rank_pos rows, never both); ListConfig never names
        # rank_pos with a re-ranking group.
        in_group = alive & (cols[group] == 1)
        grouped |= in_group
        members = np.flatnonzero(in_group)
        position = cols[POSITION_COLUMN[group]][members]
        rank = np.where(position < 0, np.iinfo(np.int64).max, position)
        # lexsort: last key first; ties broken by video_id, then log position.
        members = members[np.lexsort((members, cols["video_id"][members], rank))]
        chosen.extend((int(i), group) for i in members[:group_size])
        not_in_examples(members[group_size:], f"beyond_group_size:{group}")
    not_in_examples(np.flatnonzero(alive & ~grouped), "not_in_groups")
    videos = cols["video_id"][np.array([i for i, _ in chosen], dtype=np.int64)].tolist()
    chosen = [chosen[i] for i in candidate_order(request_id, videos)]
    counts["rows_in_examples"] += len(chosen)
    counts["requests_written"] += 1

    example = _example(cols, _sequences(data, majority_row), chosen, majority_row, config)
    return RequestResult(example.SerializeToString(), letters, counts)


def _example(cols, sequences, chosen, context_row: int, config: ListConfig):
    import tensorflow as tf

    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    size_pad = config.list_size - len(chosen)
    index = [i for i, _ in chosen]
    stage_names = [g for _, g in chosen]
    exposed = cols["realshow"][index] == 1
    feedback = np.where(exposed, cols["effective_view"][index], 0).astype(float)
    if config.label_mode == "ground_truth":
        label = [
            graded_label(
                g, int(cols[POSITION_COLUMN[g]][i]), config.resolved_group_size, config.groups
            )
            for i, g in chosen
        ]
    else:
        label = feedback.tolist()
    feature: dict[str, tf.train.Feature] = {}
    for name in features.CONTEXT_FEATURES:
        feature[name] = ints([cols[name][context_row].item()])
    for name in features.SEQUENCE_FEATURES:
        feature[name] = ints(sequences[name].tolist())
    for name in features.ITEM_FEATURES:
        feature[name] = ints([*cols[name][index].tolist(), *[ITEM_PAD_VALUES[name]] * size_pad])
    feature[features.STAGE] = ints(
        [*[config.stage_code(g) for g in stage_names], *[features.PAD_ID] * size_pad]
    )
    feature[features.RANK_INDEX] = ints(
        [*cols["rank_index"][index].tolist(), *[features.PAD_ID] * size_pad]
    )
    feature[features.LABEL] = floats([*label, *[0.0] * size_pad])
    feature[features.FEEDBACK_LABEL] = floats([*feedback.tolist(), *[0.0] * size_pad])
    feature[features.MASK] = ints([1] * len(chosen) + [0] * size_pad)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def example_feature_spec(list_size: int = features.LIST_SIZE) -> dict[str, Any]:
    """``tf.io.parse_example`` spec of the list-wise raw example (all fixed length)."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([1], tf.int64) for name in features.CONTEXT_FEATURES}
    spec.update(
        {n: tf.io.FixedLenFeature([features.SEQ_LEN], tf.int64) for n in features.SEQUENCE_FEATURES}
    )
    candidate_ints = (*features.ITEM_FEATURES, features.STAGE, features.RANK_INDEX, features.MASK)
    spec.update({n: tf.io.FixedLenFeature([list_size], tf.int64) for n in candidate_ints})
    for name in (features.LABEL, features.FEEDBACK_LABEL):
        spec[name] = tf.io.FixedLenFeature([list_size], tf.float32)
    return spec
