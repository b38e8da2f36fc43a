"""Small simulated logs shared by the simulator tests (one simulation per session)."""

from __future__ import annotations

import pytest

from simulator import SimulatorConfig, simulate

# A small world so every simulation takes well under a second.
SMALL = SimulatorConfig(
    num_users=300,
    new_users_per_day=20,
    num_initial_items=800,
    new_items_per_day=100,
    num_authors=60,
    pool_size=120,
    prerank_keep=60,
    coarse_keep=25,
)
DAYS = 3
REQUESTS = 60
SEED = 7


@pytest.fixture(scope="session")
def small_config() -> SimulatorConfig:
    return SMALL


@pytest.fixture(scope="session")
def clean_log(tmp_path_factory):
    """(out_dir, manifest) of a clean Parquet log."""
    out = tmp_path_factory.mktemp("clean")
    manifest = simulate(SMALL, out, days=DAYS, requests_per_day=REQUESTS, seed=SEED)
    return out, manifest
