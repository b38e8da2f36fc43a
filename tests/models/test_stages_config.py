"""The cascade's stages as configuration (``models.config``): defaults, round trips and the
configuration-time errors that name the field. No TensorFlow."""

from __future__ import annotations

import json

import pytest

from models.config import (
    DEFAULT_STAGES,
    LOSS_METHODS,
    LOSS_STAGE_COUNTS,
    LossConfig,
    MetricConfig,
    ModelConfig,
    StageConfig,
    check_cascade,
)

THREE = [
    {"name": "retrieval", "kind": "two_tower", "keep": 40, "role": "retrieval"},
    {"name": "prerank", "kind": "mlp", "keep": 30, "role": "rescore"},
    {"name": "ranking", "kind": "din", "keep": 20, "role": "rescore"},
]


def test_the_default_is_todays_two_stage_cascade():
    config = ModelConfig()
    assert config.stages == DEFAULT_STAGES
    assert config.stage_names == ("retrieval", "ranking")
    assert config.stage_keeps == (30, 20)
    assert [(s.kind, s.role) for s in config.stages] == [
        ("two_tower", "retrieval"),
        ("din", "rescore"),
    ]


def test_stages_round_trip_through_json():
    config = ModelConfig.from_dict({"stages": THREE, "embedding_dim": 4})
    assert config.stage_keeps == (40, 30, 20)
    assert all(isinstance(s, StageConfig) for s in config.stages)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([THREE[1], THREE[2]], "first stage .* role 'retrieval'"),
        ([THREE[0], {**THREE[1], "role": "retrieval", "kind": "two_tower"}], "'rescore'"),
        ([THREE[0], {**THREE[1], "keep": 40}, THREE[2]], "strictly decrease"),
        ([THREE[0], {**THREE[1], "keep": 50}], "strictly decrease"),
        ([THREE[0]], "at least two stages"),
        ([THREE[0], {**THREE[2], "name": "retrieval"}], "distinct"),
        ([{**THREE[0], "kind": "din"}, THREE[2]], "kind 'two_tower'"),
        ([THREE[0], {**THREE[2], "kind": "gbdt"}], r"stages\[1\]\.kind: unknown value 'gbdt'"),
        ([THREE[0], {**THREE[2], "name": "Ranking Stage"}], "StageConfig.name"),
        ([THREE[0], {**THREE[2], "keep": 0}], r"stages\[1\]\.keep: must be >= 1"),
        ([THREE[0], {**THREE[2], "size": 3}], "unknown field"),
        ([THREE[0], {**THREE[2], "name": "total"}], "'total' is reserved"),
    ],
)
def test_malformed_stages_fail_at_configuration_time_naming_the_field(stages, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({"stages": stages})


def test_gt_num_and_list_size_are_checked_against_the_stages():
    model = ModelConfig.from_dict({"stages": THREE})
    check_cascade(model, LossConfig(), MetricConfig(), list_size=50)
    with pytest.raises(ValueError, match="list size 39"):
        check_cascade(model, list_size=39)
    with pytest.raises(ValueError, match="LossConfig.gt_num: gt_num 21"):
        check_cascade(model, LossConfig(gt_num=21))
    with pytest.raises(ValueError, match="MetricConfig.gt_num: gt_num 25"):
        check_cascade(model, metrics=MetricConfig(gt_num=25))


def test_the_cut_offs_have_one_source():
    with pytest.raises(ValueError, match="LossConfig.stage_keep.*ModelConfig.stages"):
        LossConfig.from_dict({"stage_keep": [30, 20]})
    with pytest.raises(ValueError, match="MetricConfig.k1/k2.*ModelConfig.stages"):
        MetricConfig.from_dict({"k1": 30})


def test_every_method_declares_its_stage_counts():
    assert set(LOSS_STAGE_COUNTS) == set(LOSS_METHODS)
    assert LOSS_STAGE_COUNTS["lcron"] is None  # any number of stages


@pytest.mark.parametrize("method", LOSS_METHODS)
def test_a_method_without_a_form_for_the_stage_count_is_refused_by_name(method):
    model = ModelConfig.from_dict({"stages": THREE})
    counts = LOSS_STAGE_COUNTS[method]
    check_cascade(ModelConfig(), LossConfig(method=method))  # every method has a 2-stage form
    if counts is None or 3 in counts:
        check_cascade(model, LossConfig(method=method))
    else:
        with pytest.raises(ValueError, match=f"LossConfig.method '{method}' has no 3-stage form"):
            check_cascade(model, LossConfig(method=method))
