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
        (["data=3"], "data: must be an object, got 3"),
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

    # A simulated log that can fill the three-stage groups, so that changing groups is valid.
    base = DataConfig(simulator={"rerank_candidates": 20})
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
        "max_dead_letter_share": 0.5,  # a share: +1 would be out of range
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.loss.tau=-1"], "training.loss.tau: must be > 0, got -1"),
        (["training.loss.methd=bce"], "training.loss: unknown field 'methd'; known: method,"),
        (["training.trainer.batch_size=64.5"], "training.trainer.batch_size: must be an integer"),
        (["training.model.top_k=0"], "training.model.top_k: must be >= 1, got 0"),
        (['data.train_days=[0,"a"]'], "data.train_days[1]: must be an integer, got 'a'"),
        (["data.format=xml"], "data.format: unknown value 'xml'"),
        (["data.preset=kuai"], "data.preset: unknown preset 'kuai'"),
        (["push.warmup_requests=5000"], "push.warmup_requests: must be <= 1000, got 5000"),
        (["evaluation.recall_floor=true"], "evaluation.recall_floor: must be a number, got True"),
        (["enable_cache=1"], "enable_cache: must be true or false, got 1"),
        (["nonsense=1"], "PipelineConfig: unknown field 'nonsense'"),
    ],
)
def test_types_and_ranges_fail_with_the_full_path(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        load_config(None, overrides)
    assert message in str(raised.value)


def test_a_section_given_in_code_is_checked_too() -> None:
    from pipeline.config import TrainingConfig

    with pytest.raises(ValueError, match=r"TrainingConfig: loss\.tau: must be > 0, got -1"):
        PipelineConfig(training=TrainingConfig(loss={"tau": -1}))


def test_text_fields_keep_what_was_typed_and_the_json_round_trip() -> None:
    from models.config_schema import build

    config = load_config(None, ["pipeline_name=2024", "data.input_base=007", "data.list_size=44"])
    assert config.pipeline_name == "2024" and config.data.input_base == "007"
    assert config.data.list_size == 44
    assert build(PipelineConfig, json.loads(json.dumps(config.to_dict()))) == config


def _show(argv: list[str], capsys) -> tuple[int, str, str]:
    from pipeline.cli import main

    code = main(["config", "show", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_config_show_defaults(capsys) -> None:
    code, out, err = _show([], capsys)
    assert code == 0 and err == ""
    lines = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    lines = {k.strip(): v for k, v in lines.items()}
    # The Trainer's sections are shown whole, with LossConfig's defaults.
    assert lines["training.loss.method"] == '"lcron"'
    assert lines["training.trainer.batch_size"] == "256"
    assert lines["data.train_days"] == "[0, 1]"
    assert lines["resolved_serving_dir"] == json.dumps(str(Path("outputs") / "serving"))
    # Only the pipeline's own default over a section's carries a source.
    commented = [line for line in out.splitlines() if "#" in line and not line.startswith("#")]
    assert len(commented) == 1
    assert "training.loss.corpus_weight" in commented[0]
    assert commented[0].endswith("# pipeline default (LossConfig's: 0.0)")


def test_config_show_names_the_source_of_each_override(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"output_dir": "x", "training": {"loss": {"tau": 5}}}))
    argv = ["--config", str(path), "--set", "training.loss.tau=7", "--set", "data.list_size=44"]
    code, out, _ = _show([*argv, "--data", "/logs"], capsys)
    assert code == 0
    by_key = {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert by_key["output_dir"].endswith(f"# --config {path}")
    assert "= 7" in by_key["training.loss.tau"] and by_key["training.loss.tau"].endswith("# --set")
    assert by_key["data.list_size"].endswith("# --set")
    assert by_key["data.input_base"].endswith("# --data")
    assert "#" not in by_key["training.loss.method"]

    code, out, _ = _show([*argv, "--json"], capsys)
    shown = json.loads(out)
    assert shown["config"]["training"]["loss"]["tau"] == 7
    assert shown["config"]["output_dir"] == "x"
    assert shown["sources"] == {
        "output_dir": f"--config {path}",
        "training.loss.tau": "--set",
        "data.list_size": "--set",
        "training.loss.corpus_weight": "pipeline default (LossConfig's: 0.0)",
    }
    assert shown["derived"]["pipeline_root"] == str(Path("x") / "pipeline_root")


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
    with pytest.raises(ValueError, match="training.loss: unknown field 'stage_keep'"):
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


def test_re_ranking_groups_on_a_simulated_log_need_twenty_re_ranking_candidates() -> None:
    """With the simulator's default (ranking passes 10 to re-ranking), rerank_pos + rerank_neg
    would be those 10 and a three-stage list of 50 would hold 40 real candidates."""
    from pipeline.config import DataConfig

    groups = ("rerank_pos", "rerank_neg", "rank_neg", "coarse_neg", "prerank_neg")
    with pytest.raises(ValueError, match="simulator.rerank_candidates >= 20"):
        DataConfig(list_size=50, groups=groups)
    assert DataConfig(list_size=50, groups=groups, simulator={"rerank_candidates": 20})
    assert DataConfig(list_size=50, groups=groups, input_base="/logs")  # the user's own logs
    with pytest.raises(ValueError, match="data.simulator"):
        DataConfig(simulator={"rerank_candidate": 20})
    shipped = load_config(THREE_STAGE)
    assert shipped.data.simulator_config().rerank_candidates == 20
