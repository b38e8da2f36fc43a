"""Configuration of a method comparison: one typed object, read from JSON.

A *variant* is a named loss configuration (a method from the paper, or an ablation of LCRON);
a *cell* is one variant trained with one seed and evaluated on one day. Every variant gets the
same models, data, steps and batch size: only the loss differs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from models.config import LOSS_METHODS, LossConfig, ModelConfig, TrainerConfig


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
        before the comparison and the same for every variant.
      eval_days: the paper's streaming protocol: for each day t, train on the
        ``train_window`` days before t, evaluate on day t.
      train_window: days of training data before each evaluation day.
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
        for day in self.eval_days:
            if not 1 <= day < self.simulate_days:
                raise ValueError(
                    f"ExperimentConfig: eval day {day} not in 1..{self.simulate_days - 1}"
                )

    def train_days(self, eval_day: int) -> list[int]:
        return list(range(max(0, eval_day - self.train_window), eval_day))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load(path: str | Path) -> ExperimentConfig:
    """Reads a JSON config; unknown keys fail by name."""
    values = json.loads(Path(path).read_text())
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
