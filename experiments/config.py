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
from typing import Annotated, Any

import pydantic
from annotated_types import Ge, Gt

from models.config import (
    LOSS_METHODS,
    AtLeast1,
    LossConfig,
    MetricConfig,
    ModelConfig,
    TrainerConfig,
    check_cascade,
)
from models.config_schema import build, check_section, config_dataclass, section, section_class
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


def _check_sections(config: Any) -> None:
    """Checks the sparse sections of a configuration given in code (``build`` checks them, under
    their full path, when the configuration comes from a file)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if section_class(field) is not None and value is not None:
            check_section(section_class(field), value, field.name)


@config_dataclass
class Variant:
    """A named loss configuration (``models.config.LossConfig`` fields)."""

    name: Annotated[str, pydantic.StringConstraints(min_length=1)]
    loss: dict[str, Any] = dataclasses.field(metadata=section(LossConfig))

    @pydantic.model_validator(mode="after")
    def _sections(self) -> Variant:
        _check_sections(self)
        return self

    def loss_config(self) -> LossConfig:
        return LossConfig.from_dict(self.loss)


@config_dataclass
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

    k: AtLeast1 = 10
    k1: AtLeast1 = 100
    day: Annotated[int, Ge(0)] | None = None
    train_days: tuple[Annotated[int, Ge(0)], ...] | None = None
    max_requests: AtLeast1 | None = None
    seed: int = 0
    concurrency: AtLeast1 = 32

    @pydantic.model_validator(mode="after")
    def _k_within_k1(self) -> ReplayConfig:
        if self.k > self.k1:
            raise ValueError(f"need 1 <= k <= k1, got k={self.k}, k1={self.k1}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ReplayConfig:
        """Builds a config from a dict (JSON values); errors name the field."""
        return build(cls, values, cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@config_dataclass
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

    variants: Annotated[tuple[Variant, ...], pydantic.Field(min_length=1)] = tuple(
        Variant(m, {"method": m}) for m in LOSS_METHODS
    )
    seeds: Annotated[tuple[int, ...], pydantic.Field(min_length=1)] = (0, 1, 2)
    simulate_days: AtLeast1 = 4
    simulate_requests_per_day: AtLeast1 = 1000
    simulate_seed: int = 7
    eval_days: tuple[AtLeast1, ...] = (2, 3)  # each day needs a day before it
    train_window: AtLeast1 = 2
    passes: Annotated[float, Gt(0)] | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict, metadata=section(DataConfig))
    model: dict[str, Any] = dataclasses.field(default_factory=dict, metadata=section(ModelConfig))
    trainer: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=section(TrainerConfig)
    )
    replay: dict[str, Any] | None = dataclasses.field(default=None, metadata=section(ReplayConfig))

    @pydantic.field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return variants

    @pydantic.field_validator("data")
    @classmethod
    def _data_days_are_the_experiments(cls, data: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(data) & set(_DATA_FIELDS_SET_ELSEWHERE))
        if clash:
            raise ValueError(
                f"{clash[0]} is set by eval_days / train_window and simulate_* in an experiment"
            )
        return data

    @pydantic.model_validator(mode="after")
    def _days_and_format(self) -> ExperimentConfig:
        _check_sections(self)
        data = self.data_config()
        for day in self.eval_days:
            if not data.input_base and day >= self.simulate_days:
                raise ValueError(f"eval day {day} not in 1..{self.simulate_days - 1}")
        if not data.input_base and data.format not in ("parquet", "csv"):
            raise ValueError(
                f"the simulator writes parquet or csv, not {data.format!r};"
                " set data.input_base for other logs"
            )
        # Every variant's loss against the stages (cut-offs, gt_num, a form for N stages: a
        # baseline without one is refused by name) and the stages against the list size.
        model = ModelConfig.from_dict(self.model)
        for variant in self.variants:
            try:
                check_cascade(model, variant.loss_config(), MetricConfig(), data.list_size)
            except ValueError as err:
                raise ValueError(f"variant {variant.name!r}: {err}") from None
        if self.replay is not None and len(model.stages) != 2:
            # The replay serves the exported retrieval/ranking pair; a deeper cascade's middle
            # stages would be silently skipped.
            raise ValueError(
                f"replay serves a two-stage cascade, model.stages has {len(model.stages)}"
            )
        return self

    def data_config(self) -> DataConfig:
        """The ingestion's configuration (``pipeline.config.DataConfig``) of every cell."""
        return data_config(self.data)

    def train_days(self, eval_day: int) -> list[int]:
        return list(range(max(0, eval_day - self.train_window), eval_day))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Reads a JSON config, then ``dotted.key=value`` overrides; errors name the full key."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    apply_overrides(values, overrides, ExperimentConfig)
    try:
        return build(ExperimentConfig, values)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
