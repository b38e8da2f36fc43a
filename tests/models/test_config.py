"""models.config on the shared mechanism (models.config_schema): types and ranges on the fields,
unknown keys rejected, errors naming the field, JSON round trip of the Trainer's custom_config.
No TensorFlow."""

from __future__ import annotations

import dataclasses
import json

import pytest

from models.config import (
    IndexConfig,
    LossConfig,
    MetricConfig,
    ModelConfig,
    StageConfig,
    TrainerConfig,
)
from models.config_schema import ConfigError

CLASSES = (LossConfig, MetricConfig, ModelConfig, TrainerConfig, IndexConfig)


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (LossConfig, {"tau": -1}, "LossConfig.tau: must be > 0, got -1"),
        (LossConfig, {"gt_num": "10"}, "LossConfig.gt_num: must be an integer, got '10'"),
        (LossConfig, {"use_e2e": 1}, "LossConfig.use_e2e: must be true or false, got 1"),
        (LossConfig, {"stage_top_k": [30, 0]}, "LossConfig.stage_top_k[1]: must be >= 1, got 0"),
        (LossConfig, {"method": "lcorn"}, "LossConfig.method: unknown value 'lcorn'"),
        (LossConfig, {"corpus_weight": -0.5}, "LossConfig.corpus_weight: must be >= 0"),
        (MetricConfig, {"ndcg_k": 0}, "MetricConfig.ndcg_k: must be >= 1, got 0"),
        (ModelConfig, {"top_k": 1.5}, "ModelConfig.top_k: must be an integer, got 1.5"),
        (ModelConfig, {"retrieval_temperature": 0}, "retrieval_temperature: must be > 0"),
        (TrainerConfig, {"distribution": "tpu"}, "TrainerConfig.distribution: unknown value"),
        (TrainerConfig, {"eval_steps": 0}, "TrainerConfig.eval_steps: must be >= 1, got 0"),
        (IndexConfig, {"num_leaves": -3}, "IndexConfig.num_leaves: must be >= 1, got -3"),
        (IndexConfig, {"recall_queries": -1}, "IndexConfig.recall_queries: must be >= 0"),
    ],
)
def test_bad_values_fail_naming_the_field(cls: type, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        cls.from_dict(values)
    assert message in str(raised.value)
    # The constructor checks the same (a ValueError, as before the migration).
    if not any(isinstance(v, list) for v in values.values()):
        with pytest.raises(ValueError, match=message.split(":")[0].replace(".", r"\.")):
            cls(**values)


@pytest.mark.parametrize("cls", CLASSES)
def test_unknown_keys_are_named_with_their_section(cls: type) -> None:
    with pytest.raises(ConfigError) as raised:
        cls.from_dict({"tua": 1})
    text = str(raised.value)
    assert text.startswith(f"{cls.__name__}: unknown field 'tua'; known: ")
    assert dataclasses.fields(cls)[0].name in text


@pytest.mark.parametrize("cls", CLASSES)
def test_json_round_trip_as_the_trainer_receives_it(cls: type) -> None:
    # Non-default values in every tuple/optional field, through JSON like TFX custom_config.
    changed = {
        LossConfig: {"stage_top_k": (12, 8), "fixed_weights": (2.0, 0.5), "group_size": 5},
        MetricConfig: {"gt_num": 4, "ndcg_k": 5},
        ModelConfig: {
            "retrieval_hidden": (8, 4),
            "ranking_hidden": (),
            "stages": (
                StageConfig("retrieval", "two_tower", 40, "retrieval"),
                StageConfig("prerank", "mlp", 30),
                StageConfig("ranking", "din", 20),
            ),
        },
        TrainerConfig: {"eval_steps": 3, "distribution": "mirrored"},
        IndexConfig: {"kind": "scann", "num_leaves": 7},
    }[cls]
    config = cls(**changed)
    back = cls.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config and hash(back) == hash(config)
    assert cls.from_dict(None) == cls() == cls.from_dict({})


def test_replace_validates_and_instances_stay_frozen() -> None:
    config = LossConfig()
    assert dataclasses.replace(config, tau=7.0).tau == 7.0
    with pytest.raises(ValueError, match="LossConfig.tau: must be > 0"):
        dataclasses.replace(config, tau=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tau = 1.0  # type: ignore[misc]
    # An int is a valid float (JSON has one number type); a float is not an int.
    assert LossConfig.from_dict({"tau": 5}).tau == 5.0
