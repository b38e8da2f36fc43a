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

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"ExperimentConfig: variant names must be unique, got {names}")
        for variant in self.variants:
            variant.loss_config()  # unknown fields or methods fail here, by name
        ModelConfig.from_dict(self.model)
        TrainerConfig.from_dict(self.trainer)
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
