"""The pipeline's configuration: one typed object with documented defaults.

Sources, later ones win: the defaults below, a JSON file (``--config FILE``), then command-line
overrides (``--set trainer.train_steps=200``). Unknown keys, wrong types and out-of-range values
are rejected naming the full field path (``training.loss.tau: must be > 0, got -1``) so a typo
never silently falls back to a default; ``lcron config show`` prints the resolved configuration
and where each value came from. The runners own paths and orchestration; ``create_pipeline``
receives everything it needs from here as plain arguments.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from annotated_types import Ge, Interval

from models import config as model_config
from models.config_schema import (
    build,
    check_section,
    config_dataclass,
    flatten,
    is_text_field,
    section,
    section_class,
)
from models.features import GROUP_SIZE

Share = Annotated[float, Interval(ge=0.0, le=1.0)]
Day = Annotated[int, Ge(0)]


@config_dataclass(frozen=False)
class DataConfig:
    """Where the logs come from and how days become splits.

    Attributes:
      input_base: folder of daily log folders (``day_00/``, ``day_01/``, ...). Empty: ``lcron run``
        simulates a log into ``<output_dir>/logs``.
      format: "parquet", "csv" or "feather" (RecFlow's all_stage files).
      day_pattern: glob of one day's files under ``input_base``; ``{day}`` is the day number
        (``"day_{day:02d}/*"``: the simulator's folders; for a RecFlow download e.g.
        ``"all_stage/2024-01-{day:02d}.feather"``).
      train_days: day folders used for training (the paper's streaming protocol: days 0..t-1).
      eval_days: later day folders used for evaluation (day t).
      list_size: candidates per request in the list-wise example (10 per stage group).
      groups: the list's stage groups, best first, by log flag; the first is the ground truth
        (two stages: rank_pos, rank_neg, coarse_neg, prerank_neg; the paper's three-stage
        setting: rerank_pos, rerank_neg, rank_neg, coarse_neg, prerank_neg).
      label_mode: "ground_truth" (the ranking stage's top-10, the paper's) or "feedback".
      preset: the input's conventions, by name: "default" (ours, the simulator's) or
        "recflow" (a RecFlow download: upload_timestamp in s, duration and playing_time in ms;
        see ``components/recflow_example_gen/presets.py``).
      validation: ``rows.ValidationConfig`` fields over the preset's, e.g.
        ``{"time_units": {"duration": "ms"}}`` or ``{"max_upload_after_request_ms": 60000}``.
      max_dead_letter_share: ingestion fails when more than this share of a split's rows are
        malformed (and always when a split ends up without an example).
      stop_on_anomalies: ExampleValidator fails the run before Transform when the statistics
        of the examples break the curated schema; false only records the anomalies.
      simulate_days / simulate_requests_per_day / simulate_seed: the embedded default log.
      simulate_corrupt_fraction: share of malformed rows in the simulated log (dead-lettered).
      simulator: ``simulator.SimulatorConfig`` fields over its defaults for the simulated log,
        e.g. ``{"rerank_candidates": 20}``: the paper's three-stage setting, where ranking passes
        20 to re-ranking and rerank_pos / rerank_neg are 10 each (docs/simulator.md). The
        re-ranking groups on a simulated log need it: with the default 10 they would fill 40 of
        50 slots.
    """

    input_base: str = ""
    format: Literal["parquet", "csv", "feather"] = "parquet"
    day_pattern: str = "day_{day:02d}/*"
    train_days: tuple[Day, ...] = (0, 1)
    eval_days: tuple[Day, ...] = (2,)
    list_size: model_config.AtLeast1 = 40
    groups: tuple[str, ...] = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
    label_mode: Literal["ground_truth", "feedback"] = "ground_truth"
    preset: str = "default"
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_dead_letter_share: Share = 0.01
    stop_on_anomalies: bool = True
    simulate_days: model_config.AtLeast1 = 3
    simulate_requests_per_day: model_config.AtLeast1 = 1500
    simulate_seed: int = 7
    simulate_corrupt_fraction: Share = 0.002
    simulator: dict[str, Any] = dataclasses.field(default_factory=dict)

    @pydantic.field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        # Light import (pyarrow): only when a configuration is built.
        from components.recflow_example_gen import presets

        if preset not in presets.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(presets.PRESETS)}")
        return preset

    @pydantic.model_validator(mode="after")
    def _known_groups(self) -> DataConfig:
        from components.recflow_example_gen import listwise

        listwise.ListConfig(list_size=self.list_size, groups=self.groups)  # names a bad group
        return self

    @pydantic.field_validator("simulator")
    @classmethod
    def _simulator_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        from simulator.config import SimulatorConfig  # numpy/pyarrow: only when configured

        check_section(SimulatorConfig, values, "data.simulator")
        return values

    @pydantic.model_validator(mode="after")
    def _simulated_groups_are_filled(self) -> DataConfig:
        rerank_groups = {"rerank_pos", "rerank_neg"} & set(self.groups)
        passed = self.simulator_config().rerank_candidates
        if not self.input_base and rerank_groups and passed < 2 * GROUP_SIZE:
            raise ValueError(
                f"groups {sorted(rerank_groups)} on the simulated log need "
                f"simulator.rerank_candidates >= {2 * GROUP_SIZE} (got {passed}): ranking must "
                "pass re-ranking enough items for rerank_pos and rerank_neg to hold "
                f"{GROUP_SIZE} each (docs/simulator.md, the three-stage setting)"
            )
        return self

    def simulator_config(self) -> Any:
        """The simulated log's ``simulator.SimulatorConfig``."""
        from simulator.config import SimulatorConfig

        return SimulatorConfig.from_dict(self.simulator)

    @pydantic.field_validator("validation")
    @classmethod
    def _valid_fields(cls, validation: dict[str, Any], info: pydantic.ValidationInfo) -> dict:
        from components.recflow_example_gen import presets

        if "preset" in info.data:  # else the preset's own error says why
            presets.validation_fields(info.data["preset"], validation)
        return validation

    def example_gen_options(self) -> dict[str, Any]:
        """The ingestion's options (``RecFlowExampleGen`` keyword arguments) from this config.

        Every field is either an ingestion option passed here or listed in
        ``NOT_EXAMPLE_GEN_OPTIONS`` (a test checks it), so a new ingestion option reaches every
        caller that builds the ExampleGen from a ``DataConfig`` (``lcron experiment --data``).
        """
        return {
            "input_format": self.format,
            "list_size": self.list_size,
            "groups": tuple(self.groups),
            "label_mode": self.label_mode,
            "preset": self.preset,
            "validation": dict(self.validation),
            "max_dead_letter_share": self.max_dead_letter_share,
        }


# DataConfig fields that are not RecFlowExampleGen options: where the files are, how days
# become splits, the embedded simulated log, and the validation after ingestion.
NOT_EXAMPLE_GEN_OPTIONS: tuple[str, ...] = (
    "input_base",
    "day_pattern",
    "train_days",
    "eval_days",
    "simulate_days",
    "simulate_requests_per_day",
    "simulate_seed",
    "simulate_corrupt_fraction",
    "simulator",
    "stop_on_anomalies",  # ExampleValidator's, after the ingestion
)


# The pipeline's loss on top of ``LossConfig``'s defaults (the paper's LCRON): retrieval also
# learns against the whole corpus it serves (``models.losses.corpus``), which the replay against
# the simulator's truth showed users get far better answers from (docs/results.md).
DEFAULT_LOSS: dict[str, Any] = {"corpus_weight": 1.0}


@config_dataclass(frozen=False)
class TrainingConfig:
    """Hyperparameters handed to the Trainer through ``custom_config``.

    ``loss``, ``metrics``, ``model``, ``trainer`` and ``index`` are the dict forms of
    ``models.config.LossConfig``, ``MetricConfig``, ``ModelConfig``, ``TrainerConfig`` and
    ``IndexConfig`` (retrieval's top-K index, built at export), holding only the keys given: they
    are validated against those dataclasses when the configuration is built (errors name
    ``training.loss.<field>``). Keys given in a file or an override are merged into these
    defaults (``DEFAULT_LOSS`` for ``loss``).
    """

    loss: dict[str, Any] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_LOSS), metadata=section(model_config.LossConfig)
    )
    metrics: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=section(model_config.MetricConfig)
    )
    model: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=section(model_config.ModelConfig)
    )
    trainer: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=section(model_config.TrainerConfig)
    )
    index: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata=section(model_config.IndexConfig)
    )
    warm_start: bool = False

    @pydantic.model_validator(mode="after")
    def _check_sections(self) -> TrainingConfig:
        # Built from a file these are checked (with their full path) before; this catches a
        # section given in code.
        for field in dataclasses.fields(self):
            if section_class(field) is not None:
                check_section(section_class(field), getattr(self, field.name), field.name)
        return self


@config_dataclass(frozen=False)
class EvaluationConfig:
    """Blessing rule: clear an absolute floor, beat chance level, and do not regress past the
    last blessed model.

    Attributes:
      recall_floor: minimum end-to-end Recall@gt@k1@k2 on the eval split.
      min_lift_over_chance: the recall must exceed that of an uninformative cascade (constant
        scores) on the same eval requests, 0.5 for full lists of 40 keeping 30 then 20 (more
        for shorter lists), by at least this much (absolute). Models that learned nothing about
        the labels still score a little above it from their architecture alone (trained on
        shuffled labels: 0.55-0.59 on the simulated log, 5 seeds); trained ones ~0.9.
      max_regression: largest allowed drop against the last blessed model (absolute).
      slice_features: context features the evaluation is sliced by.
    """

    recall_floor: Share = 0.5
    min_lift_over_chance: Share = 0.1
    max_regression: Share = 0.01
    slice_features: tuple[str, ...] = ("gender",)


@config_dataclass(frozen=False)
class PushConfig:
    """What the pusher requires before it publishes a pair.

    Attributes:
      min_index_recall: the lowest recall@K (against brute force, measured at export on eval
        queries) of retrieval's index that may be pushed; an approximate index below it is
        refused and the push fails.
      warmup_requests: eval requests written as TF Serving warmup records per stage.
    """

    min_index_recall: Share = 0.95
    warmup_requests: Annotated[int, Interval(ge=0, le=1000)] = 32  # TF Serving's limit: 1000


@config_dataclass(frozen=False)
class PipelineConfig:
    """Everything a runner needs. ``output_dir`` holds pipeline root, metadata and serving dir."""

    pipeline_name: str = "lcron-cascade"
    output_dir: str = "outputs"
    serving_dir: str = ""  # default: <output_dir>/serving
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    push: PushConfig = dataclasses.field(default_factory=PushConfig)
    # Beam: DirectRunner in multi-process mode locally; pass Dataflow/Flink/Spark args unchanged.
    beam_pipeline_args: tuple[str, ...] = (
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=0",
    )
    enable_cache: bool = True

    @pydantic.model_validator(mode="after")
    def _stages_fit_the_list(self) -> PipelineConfig:
        # The stages (training.model.stages) fix the loss's and the metrics' cut-offs and must
        # fit the list: a method without a form for this many stages, or a first keep above
        # data.list_size, fails here, by name.
        training = self.training
        model_config.check_cascade(
            model_config.ModelConfig.from_dict(training.model),
            model_config.LossConfig.from_dict(training.loss),
            model_config.MetricConfig.from_dict(training.metrics),
            self.data.list_size,
        )
        return self

    # --- paths the runners derive --------------------------------------------------------
    @property
    def pipeline_root(self) -> str:
        return _join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return _join(self.output_dir, "metadata.sqlite")

    @property
    def resolved_serving_dir(self) -> str:
        return self.serving_dir or _join(self.output_dir, "serving")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _join(base: str, name: str) -> str:
    """``base/name``; a URI (``gs://b/x``) keeps its ``//``, which ``Path`` would collapse."""
    if "://" in base:
        return f"{base.rstrip('/')}/{name}"
    return str(Path(base) / name)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"config: cannot set {dotted}: {key} is not an object")
    node[keys[-1]] = value


def _parse_value(text: str) -> Any:
    """Command-line values are JSON when they parse as JSON (numbers, lists, true), else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """Builds the configuration from defaults, an optional JSON file and ``key=value`` overrides.

    Args:
      path: JSON file with any subset of the fields (nested objects for sections).
      overrides: ``dotted.key=value`` strings; values parse as JSON when they can (a text field
        keeps the text as typed: ``--set pipeline_name=2024``).

    Raises:
      ValueError: on unknown keys, wrong types, out-of-range values or malformed overrides,
        naming the full key (``ConfigError``).
    """
    return resolve(path, overrides)[0]


def resolve(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[PipelineConfig, dict[str, str]]:
    """``load_config``, plus where each key given came from: ``{"data.eval_days": "--set",
    "output_dir": "<file>"}`` (later sources win: defaults, the file, the overrides)."""
    tree: dict[str, Any] = {}
    if path:
        tree = json.loads(Path(path).read_text())
        if not isinstance(tree, dict):
            raise ValueError(f"config: {path} must hold a JSON object")
    sources = dict.fromkeys(flatten(tree), str(path))
    given = apply_overrides({}, overrides, PipelineConfig)
    sources.update(dict.fromkeys(flatten(given), "--set"))
    apply_overrides(tree, overrides, PipelineConfig)
    return build(PipelineConfig, tree), sources


def apply_overrides(
    tree: dict[str, Any], overrides: list[str] | None, schema: type | None = None
) -> dict[str, Any]:
    """Sets ``dotted.key=value`` strings into a nested dict (values parse as JSON when they can;
    a text field of ``schema``, when given, keeps the text as typed).

    Raises:
      ValueError: an override is not ``key=value`` or walks through a non-object.
    """
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"config: override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        text = schema is not None and is_text_field(schema, key)
        _set_dotted(tree, key, value if text else _parse_value(value))
    return tree


def data_config(values: dict[str, Any] | None) -> DataConfig:
    """A ``DataConfig`` from a dict of its fields; errors name the key (``data.<key>``)."""
    return build(DataConfig, copy.deepcopy(dict(values or {})), "data")
