"""SimulatorConfig on the shared mechanism: ranges on the fields, the cascade's consistency as a
validator, unknown keys named, JSON round trip (the log's manifest)."""

from __future__ import annotations

import json

import pytest

from simulator import SimulatorConfig


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_users": 0}, "SimulatorConfig.num_users: must be >= 1, got 0"),
        ({"taste_drift": 1.5}, "SimulatorConfig.taste_drift: must be <= 1, got 1.5"),
        ({"like_rate": -0.1}, "SimulatorConfig.like_rate: must be >= 0, got -0.1"),
        ({"latent_dim": 16.0}, "SimulatorConfig.latent_dim: must be an integer, got 16.0"),
        ({"pool_size": "200"}, "SimulatorConfig.pool_size: must be an integer, got '200'"),
        # Cross-field: the stage groups must all be non-empty.
        ({"coarse_keep": 10}, "SimulatorConfig: need pool_size > prerank_keep > coarse_keep"),
        ({"pool_sise": 10}, "SimulatorConfig: unknown field 'pool_sise'; known: num_users"),
    ],
)
def test_bad_values_fail_naming_the_field(values: dict, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        SimulatorConfig.from_dict(values)
    assert message in str(raised.value)


def test_json_file_round_trip(tmp_path) -> None:
    config = SimulatorConfig.from_dict({"num_users": 50, "taste_drift": 0.0, "capacity": 1})
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(config.to_dict()))
    back = SimulatorConfig.from_json_file(path)
    assert back == config and hash(back) == hash(config)
    assert back != SimulatorConfig()
