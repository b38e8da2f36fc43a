"""PipelineConfig: defaults, JSON file, command-line overrides, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config


def test_defaults_are_the_embedded_job() -> None:
    config = load_config()
    assert config == PipelineConfig()
    assert config.data.input_base == ""  # simulate
    assert config.data.train_days == (0, 1) and config.data.eval_days == (2,)
    assert config.resolved_serving_dir == str(Path("outputs") / "serving")
    assert any("multi_processing" in a for a in config.beam_pipeline_args)
    # LCRON (LossConfig's defaults, the paper's) plus retrieval's corpus term, chosen by the
    # replay (docs/results.md); it is switched off by setting its weight to 0.
    assert config.training.loss == {"corpus_weight": 1.0}
    off = load_config(None, ["training.loss.corpus_weight=0"])
    assert off.training.loss == {"corpus_weight": 0}


def test_file_then_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"output_dir": "x", "data": {"train_days": [0, 1, 2], "eval_days": [3]}})
    )
    config = load_config(
        path,
        ["data.eval_days=[4]", "training.loss.method=bce", "evaluation.recall_floor=0.25"],
    )
    assert config.output_dir == "x"
    assert config.data.train_days == (0, 1, 2)
    assert config.data.eval_days == (4,)
    # Given keys merge into the section's defaults: BCE keeps the corpus term.
    assert config.training.loss == {"corpus_weight": 1.0, "method": "bce"}
    assert config.evaluation.recall_floor == 0.25


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.eval_dayz=[3]"], "eval_dayz"),
        (["nonsense=1"], "nonsense"),
        (["training.loss.methd=bce"], "methd"),
        (["data=3"], "data must be an object"),
        (["no-equals-sign"], "key=value"),
    ],
)
def test_bad_keys_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


@pytest.mark.slow
def test_day_pattern_reaches_the_example_gen(tmp_path: Path) -> None:
    """A RecFlow download's layout (one feather file per date) through the configuration."""
    from pipeline import local_runner

    config = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "data.format=feather",
            "data.day_pattern=all_stage/2024-01-{day:02d}.feather",
            "data.train_days=[10,11]",
            "data.eval_days=[12]",
        ],
    )
    pipeline = local_runner.build(config, "/data/recflow")
    example_gen = next(c for c in pipeline.components if c.id == "RecFlowExampleGen")
    # TFX keeps proto execution properties as JSON text.
    input_config = json.loads(example_gen.exec_properties["input_config"])
    splits = {split["name"]: split["pattern"] for split in input_config["splits"]}
    assert splits == {
        "train": "all_stage/2024-01-10.feather,all_stage/2024-01-11.feather",
        "eval": "all_stage/2024-01-12.feather",
    }
    assert example_gen.exec_properties["input_format"] == "feather"


def test_remote_output_dir_keeps_its_scheme() -> None:
    # Path() would collapse gs://b into gs:/b: a pipeline root nobody can open.
    config = load_config(None, ["output_dir=gs://bucket/lcron/"])
    assert config.pipeline_root == "gs://bucket/lcron/pipeline_root"
    assert config.resolved_serving_dir == "gs://bucket/lcron/serving"
    assert load_config(None, ["output_dir=out"]).pipeline_root == str(Path("out") / "pipeline_root")


def test_every_data_field_is_an_ingestion_option_or_declared_otherwise() -> None:
    """A new DataConfig field must reach ``example_gen_options`` (every caller that builds the
    ExampleGen from a DataConfig, e.g. ``lcron experiment --data``) or be declared as not an
    ingestion option."""
    import dataclasses

    from pipeline.config import NOT_EXAMPLE_GEN_OPTIONS, DataConfig

    base = DataConfig()
    for field in dataclasses.fields(DataConfig):
        if field.name in NOT_EXAMPLE_GEN_OPTIONS:
            continue
        changed = dataclasses.replace(base, **{field.name: _other_value(field.name, base)})
        assert (
            changed.example_gen_options() != base.example_gen_options()
        ), f"DataConfig.{field.name} does not reach example_gen_options()"


def _other_value(name: str, config) -> object:
    value = getattr(config, name)
    others = {
        "format": "feather",
        "label_mode": "feedback",
        "preset": "recflow",
        "validation": {"time_units": {"duration": "ms"}},
        "groups": ("rerank_pos", "rerank_neg", "rank_neg", "coarse_neg", "prerank_neg"),
    }
    if name in others:
        return others[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    return None


THREE_STAGE = Path(__file__).resolve().parents[2] / "pipeline" / "configs" / "three_stage.json"


def test_the_three_stage_config_file_selects_three_stages() -> None:
    from models.config import ModelConfig

    config = load_config(THREE_STAGE)
    assert config.data.list_size == 50
    assert config.data.groups[0] == "rerank_pos"
    model = ModelConfig.from_dict(config.training.model)
    assert model.stage_names == ("retrieval", "prerank", "ranking")
    assert model.stage_keeps == (40, 30, 20)
    assert [s.kind for s in model.stages] == ["two_tower", "mlp", "din"]
    assert config.training.loss == {"corpus_weight": 1.0, "gt_num": 10}  # LCRON, N stages


def test_stages_by_set_and_their_errors_are_named_at_configuration_time() -> None:
    stages = json.dumps(
        [
            {"name": "retrieval", "kind": "two_tower", "keep": 36, "role": "retrieval"},
            {"name": "prerank", "kind": "mlp", "keep": 24, "role": "rescore"},
            {"name": "ranking", "kind": "din", "keep": 12, "role": "rescore"},
        ]
    )
    config = load_config(None, [f"training.model.stages={stages}"])
    assert [s["keep"] for s in config.training.model["stages"]] == [36, 24, 12]
    assert load_config(None, [f"training.model.stages={stages}", "training.loss.method=icc"])
    # A baseline without a four-stage form, refused by name before anything runs.
    four = [*json.loads(stages), {"name": "rerank", "kind": "din", "keep": 10}]
    with pytest.raises(ValueError, match="'icc' has no 4-stage form"):
        load_config(None, [f"training.model.stages={json.dumps(four)}", "training.loss.method=icc"])
    # The first keep above the list size.
    with pytest.raises(ValueError, match="list size 30"):
        load_config(None, [f"training.model.stages={stages}", "data.list_size=30"])
    with pytest.raises(ValueError, match="LossConfig.stage_keep"):
        load_config(None, ["training.loss.stage_keep=[30,20]"])
    with pytest.raises(ValueError, match="groups"):
        load_config(None, ['data.groups=["rank_pos","rerank_pos"]'])


@pytest.mark.slow
def test_the_three_stage_pipeline_gets_its_schema_groups_and_stages(tmp_path: Path) -> None:
    """The components of ``create_pipeline`` for three stages (built, not run)."""
    from pipeline import local_runner

    config = load_config(THREE_STAGE, [f"output_dir={tmp_path}"])
    pipeline = local_runner.build(config, "/data/logs")
    nodes = {c.id: c for c in pipeline.components}
    example_gen = nodes["RecFlowExampleGen"].exec_properties
    assert example_gen["list_size"] == 50
    assert json.loads(example_gen["groups"])[0] == "rerank_pos"
    schema_file = nodes["ImportSchemaGen"].exec_properties["schema_file"]
    assert "schema_50x5" in schema_file and "size: 50" in Path(schema_file).read_text()
    stages = json.loads(nodes["CascadeEvaluator"].exec_properties["stages"])
    assert [s["name"] for s in stages] == ["retrieval", "prerank", "ranking"]
