"""Configuration of a method comparison: one typed object, read from JSON.

A *variant* is a named loss configuration (a method from the paper, or an ablation of LCRON);
a *cell* is one variant trained with one seed and evaluated on one day. Every variant gets the
same models, data, steps and batch size: only the loss differs.

The logs are the simulator's (``simulate_*``) unless ``data.input_base`` names a folder of
daily logs, e.g. a RecFlow download: ``data`` takes the fields of the pipeline's
``pipeline.config.DataConfig`` (format, day_pattern, list_size, label_mode, ...), read the way
``lcron run`` reads them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from models.config import (
    LOSS_METHODS,
    LossConfig,
    MetricConfig,
    ModelConfig,
    TrainerConfig,
    check_cascade,
)
from pipeline.config import DataConfig, apply_overrides, data_config

# DataConfig fields an experiment sets its own way: its days come from eval_days/train_window
# and its simulated log from the simulate_* fields below.
_DATA_FIELDS_SET_ELSEWHERE = (
    "train_days",
    "eval_days",
    "simulate_days",
    "simulate_requests_per_day",
    "simulate_seed",
    "simulate_corrupt_fraction",
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named loss configuration (``models.config.LossConfig`` fields)."""

    name: str
    loss: dict[str, Any]

    def loss_config(self) -> LossConfig:
        return LossConfig.from_dict(self.loss)


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """How ``lcron replay`` (``experiments.replay``) replays a simulated day against the truth.

    Attributes:
      k: answers per request (the service's ``k``) and the size of the true best set.
      k1: how many of retrieval's top items ranking re-scores (the service's ``k1``).
      day: the log day replayed; None: the last day of the log.
      train_days: days whose logged candidates form the exported item corpus (what the Trainer
        indexes: ``models.data.item_corpus``); None: every day before ``day``. Only the random
        policy and the corpus ceiling use it; a served item outside it is counted and reported.
      max_requests: replay a seeded random subset of the day's requests; None: all of them.
      seed: seed of that subset and of the random policy.
      concurrency: requests in flight at once against the service's backend (the in-process
        backend micro-batches them, as under load).
    """

    k: int = 10
    k1: int = 100
    day: int | None = None
    train_days: tuple[int, ...] | None = None
    max_requests: int | None = None
    seed: int = 0
    concurrency: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.k1:
            raise ValueError(f"ReplayConfig: need 1 <= k <= k1, got k={self.k}, k1={self.k1}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"ReplayConfig.max_requests must be >= 1, got {self.max_requests}")
        if self.concurrency < 1:
            raise ValueError(f"ReplayConfig.concurrency must be >= 1, got {self.concurrency}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ReplayConfig:
        """Builds a config from a dict, rejecting unknown keys by name."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ReplayConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        if isinstance(values.get("train_days"), list):
            values["train_days"] = tuple(values["train_days"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What to compare and how.

    Attributes:
      variants: the loss configurations compared (default: the paper's eight methods).
      seeds: training seeds per variant (the log is the same for every seed).
      simulate_days / simulate_requests_per_day / simulate_seed: the simulated log, fixed
        before the comparison and the same for every variant (unused with ``data.input_base``).
      eval_days: the paper's streaming protocol: for each day t, train on the
        ``train_window`` days before t, evaluate on day t.
      train_window: days of training data before each evaluation day.
      passes: when set, each cell trains floor(passes x training requests / batch_size)
        steps, i.e. that many passes over its training days (the LCRON authors: 1, full
        batches only), and ``trainer.train_steps`` is ignored.
      data: ``pipeline.config.DataConfig`` fields; ``input_base`` set means the user's logs
        instead of the simulator's (``lcron experiment --data DIR``).
      model / trainer: ``ModelConfig`` / ``TrainerConfig`` fields shared by every cell.
      replay: ``ReplayConfig`` fields; when set (``{}`` for the defaults), every cell also
        exports its trained pair and replays its evaluation day against the simulator's truth
        (``experiments.replay``; ``day`` and ``train_days`` are the cell's). None: no replay.
    """

    variants: tuple[Variant, ...] = tuple(Variant(m, {"method": m}) for m in LOSS_METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    simulate_days: int = 4
    simulate_requests_per_day: int = 1000
    simulate_seed: int = 7
    eval_days: tuple[int, ...] = (2, 3)
    train_window: int = 2
    passes: float | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    trainer: dict[str, Any] = dataclasses.field(default_factory=dict)
    replay: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"ExperimentConfig: variant names must be unique, got {names}")
        for variant in self.variants:
            variant.loss_config()  # unknown fields or methods fail here, by name
        ModelConfig.from_dict(self.model)
        TrainerConfig.from_dict(self.trainer)
        if self.replay is not None:
            ReplayConfig.from_dict(self.replay)
            stages = ModelConfig.from_dict(self.model).stages
            if len(stages) != 2:
                # The replay serves the exported retrieval/ranking pair; a deeper cascade's
                # middle stages would be silently skipped.
                raise ValueError(
                    f"ExperimentConfig: replay serves a two-stage cascade, model.stages has"
                    f" {len(stages)}"
                )
        clash = sorted(set(self.data) & set(_DATA_FIELDS_SET_ELSEWHERE))
        if clash:
            raise ValueError(
                f"ExperimentConfig: data.{clash[0]} is set by eval_days / train_window and "
                "simulate_* in an experiment"
            )
        data = self.data_config()  # unknown data fields fail here, by name
        # Every variant's loss against the stages (cut-offs, gt_num, a form for N stages:
        # a baseline without one is refused by name) and the stages against the list size.
        model = ModelConfig.from_dict(self.model)
        for variant in self.variants:
            try:
                check_cascade(model, variant.loss_config(), MetricConfig(), data.list_size)
            except ValueError as err:
                raise ValueError(f"ExperimentConfig: variant {variant.name!r}: {err}") from None
        if self.passes is not None and self.passes <= 0:
            raise ValueError(f"ExperimentConfig: passes must be > 0, got {self.passes}")
        if self.train_window < 1:
            raise ValueError(
                f"ExperimentConfig: train_window must be >= 1, got {self.train_window}"
            )
        for day in self.eval_days:
            if day < 1:
                raise ValueError(f"ExperimentConfig: eval day {day} has no day before it")
            if not data.input_base and day >= self.simulate_days:
                raise ValueError(
                    f"ExperimentConfig: eval day {day} not in 1..{self.simulate_days - 1}"
                )
        if not data.input_base and data.format not in ("parquet", "csv"):
            raise ValueError(
                f"ExperimentConfig: the simulator writes parquet or csv, not {data.format!r};"
                " set data.input_base for other logs"
            )

    def data_config(self) -> DataConfig:
        """The ingestion's configuration (``pipeline.config.DataConfig``) of every cell."""
        return data_config(self.data)

    def train_days(self, eval_day: int) -> list[int]:
        return list(range(max(0, eval_day - self.train_window), eval_day))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Reads a JSON config, then ``dotted.key=value`` overrides; unknown keys fail by name."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    apply_overrides(values, overrides)
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    if "variants" in values:
        values["variants"] = tuple(Variant(**v) for v in values["variants"])
    for name in ("seeds", "eval_days"):
        if name in values:
            values[name] = tuple(values[name])
    return ExperimentConfig(**values)
