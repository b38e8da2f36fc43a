"""Days -> splits: the paper's streaming protocol (train on days 0..t-1, test on day t).

The input base holds one folder (or file) per day. A split's pattern lists one glob per day,
relative to the input base and separated by commas; ``day_splits([0, 1, 2], [3])`` gives::

    train: "day_00/*,day_01/*,day_02/*"     eval: "day_03/*"

so the training days and the later test day never share a split. ``per_day_splits`` makes one
split per day instead (``day_00``, ``day_01``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tfx.proto import example_gen_pb2

from components.recflow_example_gen.beam_pipeline import SPLIT_PATTERN_SEPARATOR

DEFAULT_DAY_PATTERN = "day_{day:02d}/*"  # the simulator's layout: day_00/part-00000.parquet


def day_patterns(days: Iterable[int], day_pattern: str = DEFAULT_DAY_PATTERN) -> str:
    """The comma-separated globs of ``days`` (``day_pattern`` is formatted with ``day=``)."""
    days = list(days)
    if not days:
        raise ValueError("a split needs at least one day")
    return SPLIT_PATTERN_SEPARATOR.join(day_pattern.format(day=d) for d in days)


def day_splits(
    train_days: Sequence[int],
    eval_days: Sequence[int],
    day_pattern: str = DEFAULT_DAY_PATTERN,
) -> example_gen_pb2.Input:
    """``train`` = ``train_days``, ``eval`` = ``eval_days``, as an ExampleGen input config.

    Raises:
      ValueError: a day is in both splits (the test day must be unseen in training).
    """
    overlap = sorted(set(train_days) & set(eval_days))
    if overlap:
        raise ValueError(f"days {overlap} are in both the train and the eval split")
    return example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(
                name="train", pattern=day_patterns(train_days, day_pattern)
            ),
            example_gen_pb2.Input.Split(name="eval", pattern=day_patterns(eval_days, day_pattern)),
        ]
    )


def per_day_splits(
    days: Sequence[int], day_pattern: str = DEFAULT_DAY_PATTERN
) -> example_gen_pb2.Input:
    """One split per day, named ``day_NN``."""
    return example_gen_pb2.Input(
        splits=[
            example_gen_pb2.Input.Split(name=f"day_{d:02d}", pattern=day_patterns([d], day_pattern))
            for d in days
        ]
    )


def split_patterns(input_config: example_gen_pb2.Input) -> dict[str, str]:
    """Split name -> pattern, rejecting duplicate or empty names."""
    patterns: dict[str, str] = {}
    for split in input_config.splits:
        if not split.name or split.name in patterns:
            raise ValueError(f"split names must be unique and non-empty: {split.name!r}")
        patterns[split.name] = split.pattern
    return patterns
