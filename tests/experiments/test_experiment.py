"""``lcron experiment`` end to end on a tiny config (2 methods, 1 seed, few steps), and resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from experiments import cli, config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "experiments" / "configs" / "tiny.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_shipped_configs_load() -> None:
    for path in sorted((ROOT / "experiments" / "configs").glob("*.json")):
        loaded = config.load(path)
        assert loaded.variants, path


def test_unknown_keys_are_rejected_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"seeds": [0], "steps": 3}))
    with pytest.raises(ValueError, match="steps"):
        config.load(bad)
    bad.write_text(json.dumps({"variants": [{"name": "x", "loss": {"method": "nope"}}]}))
    with pytest.raises(ValueError, match="nope"):
        config.load(bad)


def test_tiny_experiment_runs_end_to_end_and_resumes(tmp_path: Path, capfd) -> None:
    out = tmp_path / "out"
    args = argparse.Namespace(config=str(TINY), out=str(out), workers=1, verbose=False)
    assert cli.run(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"bce", "lcron"}
    assert len(results["cells"]) == 2
    for entry in results["summary"].values():
        recall = entry["recall_at_10_at_30_at_20"]["mean"]
        assert 0.0 < recall <= 1.0
    table = (out / "results.md").read_text()
    assert "| bce |" in table and "| lcron |" in table and "±" in table
    for name in ("recall_by_method.png", "recall_by_day.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    # Resume: finished cells are skipped; a removed cell alone is recomputed.
    # Cell lines are status lines: on the terminal's stderr (the rest is in the run's log file).
    capfd.readouterr()
    assert cli.run(args) == 0
    assert capfd.readouterr().err.count("done earlier, skipped") == 2
    lcron_cell = out / "cells" / "lcron__seed0__day2.json"
    kept = json.loads((out / "cells" / "bce__seed0__day2.json").read_text())
    lcron_cell.unlink()
    # The recomputation goes through the worker-process path.
    rerun = argparse.Namespace(config=str(TINY), out=str(out), workers=2, verbose=False)
    assert cli.run(rerun) == 0
    printed = capfd.readouterr().err
    assert printed.count("done earlier, skipped") == 1
    assert "lcron seed 0 day 2: end-to-end recall" in printed
    assert lcron_cell.exists()
    assert json.loads((out / "cells" / "bce__seed0__day2.json").read_text()) == kept
