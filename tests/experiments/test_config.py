"""ExperimentConfig on the shared mechanism: errors name the full path (``variants[1].loss.tau``,
``data.format``, ``replay.k``), unknown keys are named with their section, JSON round trip.
No training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import config
from experiments.config import ExperimentConfig, ReplayConfig, Variant
from models.config_schema import build

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "experiments" / "configs" / "tiny.json"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ['variants=[{"name": "a", "loss": {}}, {"name": "b", "loss": {"tau": -1}}]'],
            "variants[1].loss.tau: must be > 0, got -1",
        ),
        (
            ['variants=[{"name": "a", "loss": {"methd": "bce"}}]'],
            "variants[0].loss: unknown field 'methd'",
        ),
        (['variants=[{"name": "a"}]'], "variants[0].loss: required"),
        (["trainer.batch_size=0"], "trainer.batch_size: must be >= 1, got 0"),
        (["model.top_k=true"], "model.top_k: must be an integer, got True"),
        (['replay={"k": 20, "k1": 10}'], "replay: need 1 <= k <= k1"),
        (["data.format=xml"], "data.format: unknown value 'xml'"),
        (["passes=-1"], "passes: must be > 0, got -1"),
        (["seeds=[]"], "seeds: must have at least 1 item(s)"),
        (["sedes=[1]"], "ExperimentConfig: unknown field 'sedes'"),
    ],
)
def test_errors_name_the_full_path(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        config.load(TINY, overrides)
    assert message in str(raised.value)
    assert str(TINY) in str(raised.value)  # and the file


def test_round_trip_and_text_overrides() -> None:
    loaded = config.load(TINY, ['variants=[{"name": "2024", "loss": {}}]'])
    again = build(ExperimentConfig, json.loads(json.dumps(loaded.to_dict())))
    assert again == loaded
    assert again.variants == (Variant("2024", {}),)
    # A text field keeps what was typed (not the JSON number 7).
    assert config.load(TINY, ["data.input_base=7"]).data_config().input_base == "7"
    assert ReplayConfig.from_dict(ReplayConfig(k=5, train_days=(0, 1)).to_dict()).k == 5
