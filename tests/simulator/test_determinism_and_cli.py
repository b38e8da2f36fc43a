"""Same seed, same files; the CLI end to end; config validation."""

from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from simulator import SimulatorConfig, simulate


def _files(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _run(config, out, days=2, seed=3, **kwargs):
    return simulate(config, out, days=days, requests_per_day=30, seed=seed, **kwargs)


def test_same_seed_gives_identical_files(small_config, tmp_path):
    _run(small_config, tmp_path / "a", corrupt_fraction=0.1)
    _run(small_config, tmp_path / "b", corrupt_fraction=0.1)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert list(a) == ["day_00/part-00000.parquet", "day_01/part-00000.parquet", "manifest.json"]
    assert a == b


def test_other_seed_gives_other_log(small_config, tmp_path):
    _run(small_config, tmp_path / "a", seed=3)
    _run(small_config, tmp_path / "b", seed=4)
    a = pq.read_table(tmp_path / "a" / "day_00" / "part-00000.parquet")
    b = pq.read_table(tmp_path / "b" / "day_00" / "part-00000.parquet")
    assert a.column("video_id") != b.column("video_id")


def test_a_longer_run_starts_like_a_shorter_one(small_config, tmp_path):
    _run(small_config, tmp_path / "short", days=1)
    _run(small_config, tmp_path / "long", days=2)
    path = "day_00/part-00000.parquet"
    assert pq.read_table(tmp_path / "short" / path) == pq.read_table(tmp_path / "long" / path)


def test_refuses_to_mix_with_an_existing_output(small_config, tmp_path):
    _run(small_config, tmp_path, days=2)
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(small_config, tmp_path, days=1)
    manifest = _run(small_config, tmp_path, days=1, overwrite=True)
    assert manifest["days"] == 1 and not (tmp_path / "day_01").exists()


def test_cli_writes_log_with_config_overrides(small_config, tmp_path):
    config_file = tmp_path / "world.json"
    overrides = {**small_config.to_dict(), "num_users": 150}
    config_file.write_text(json.dumps(overrides))
    out = tmp_path / "log"
    argv = ["simulate", "--out", str(out), "--days", "2", "--requests-per-day", "25"]
    argv += ["--seed", "5", "--format", "csv", "--corrupt-fraction", "0.1"]
    argv += ["--config", str(config_file), "--quiet"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["num_users"] == 150
    assert (manifest["format"], manifest["days"], manifest["seed"]) == ("csv", 2, 5)
    assert manifest["corrupt_rows"] > 0
    assert (out / "day_01" / "part-00000.csv").stat().st_size > 0


def test_cli_rejects_unknown_config_key_by_name(tmp_path, capsys):
    config_file = tmp_path / "bad.json"
    config_file.write_text(json.dumps({"pool_sise": 10}))
    argv = ["simulate", "--out", str(tmp_path / "o"), "--days", "1", "--requests-per-day", "5"]
    assert main([*argv, "--seed", "1", "--config", str(config_file)]) == 2
    assert "pool_sise" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"pool_size": 50, "prerank_keep": 60}, "pool_size"),
        ({"coarse_keep": 10}, "coarse_keep"),
        ({"rank_noise": 2.0}, "noise"),
        ({"min_exposed": 0}, "min_exposed"),
        ({"num_users": 0}, "num_users"),
    ],
)
def test_config_rejects_inconsistent_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        SimulatorConfig.from_dict(overrides)


def test_simulate_once_reuses_only_an_identical_log(tmp_path, small_config) -> None:
    from simulator import simulate_once

    args = {"days": 2, "requests_per_day": 20, "seed": 3}
    first, written = simulate_once(small_config, tmp_path, **args)
    assert written
    day_file = tmp_path / first["per_day"][0]["path"]
    mtime = day_file.stat().st_mtime_ns
    again, written = simulate_once(small_config, tmp_path, **args)
    assert not written and again == first
    assert day_file.stat().st_mtime_ns == mtime  # not rewritten
    # Any differing argument (corruption, config) gives a new log, not the stale one.
    corrupted, written = simulate_once(small_config, tmp_path, corrupt_fraction=0.1, **args)
    assert written and corrupted["corrupt_rows"] > 0
    other = dataclasses.replace(small_config, pool_size=small_config.pool_size + 10)
    _, written = simulate_once(other, tmp_path, corrupt_fraction=0.1, **args)
    assert written
