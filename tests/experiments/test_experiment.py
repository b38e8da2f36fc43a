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


def _recflow_layout(folder: Path, rerank_candidates: int = 10) -> list[str]:
    """A tiny RecFlow-layout download: one ``all_stage/2024-01-DD.feather`` file per day with
    RecFlow's columns (no behaviour sequence) in RecFlow's units (upload_timestamp in s,
    duration and playing_time in ms: the ``recflow`` preset), days 10, 11, 12. Rows from the
    simulator (ms and s), converted; ``rerank_candidates`` 20: the three-stage setting's
    rerank_pos / rerank_neg flags, 10 each."""
    import pyarrow.compute as pc
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from simulator import SimulatorConfig, simulate

    simulated = folder / "simulated"
    config = SimulatorConfig(rerank_candidates=rerank_candidates)
    simulate(config, simulated, days=3, requests_per_day=60, seed=3)
    sequences = ["seq_video_id", "seq_author_id", "seq_category_level_two"]
    # The simulator's units -> RecFlow's, per column: factor applied to the value.
    to_recflow = {"upload_timestamp": 1e-3, "duration": 1e3, "playing_time": 1e3}
    written = []
    for day in range(3):
        table = pq.read_table(next((simulated / f"day_{day:02d}").glob("*.parquet")))
        table = table.drop(sequences)
        for column, factor in to_recflow.items():
            index = table.schema.get_field_index(column)
            values = pc.multiply(table[column].cast("float64"), factor)
            values = pc.cast(pc.floor(values), table.schema.field(column).type)
            table = table.set_column(index, column, values)
        target = folder / "recflow" / "all_stage" / f"2024-01-{10 + day:02d}.feather"
        target.parent.mkdir(parents=True, exist_ok=True)
        feather.write_feather(table, str(target))
        written.append(target.name)
    return written


THREE_STAGES = {
    "data": {
        "list_size": 50,
        "groups": ["rerank_pos", "rerank_neg", "rank_neg", "coarse_neg", "prerank_neg"],
    },
    "model": {
        "stages": [
            {"name": "retrieval", "kind": "two_tower", "keep": 40, "role": "retrieval"},
            {"name": "prerank", "kind": "mlp", "keep": 30, "role": "rescore"},
            {"name": "ranking", "kind": "din", "keep": 20, "role": "rescore"},
        ]
    },
}


@pytest.mark.parametrize(
    ("stages", "method", "recall"),
    [(2, "fs_ranknet", "recall_at_10_at_30_at_20"), (3, "lcron", "recall_at_10_at_40_at_30_at_20")],
)
def test_experiment_on_a_recflow_layout_folder(
    tmp_path: Path, stages: int, method: str, recall: str
) -> None:
    """``lcron experiment --data DIR --format feather --day-pattern ...``: the streaming
    protocol on a user's logs (train on Jan 10-11, test on Jan 12), one pass over the
    training requests; two stages, and the paper's three-stage setting (list of 50, ground
    truth rerank_pos)."""
    layout = _recflow_layout(tmp_path, rerank_candidates=10 if stages == 2 else 20)
    assert layout == [f"2024-01-{d}.feather" for d in (10, 11, 12)]
    experiment = tmp_path / "experiment.json"
    experiment.write_text(
        json.dumps(
            {
                "variants": [{"name": method, "loss": {"method": method}}],
                "seeds": [0],
                "eval_days": [12],
                "train_window": 2,
                "passes": 1,
                "trainer": {"batch_size": 16},
                **(THREE_STAGES if stages == 3 else {}),
            }
        )
    )
    out = tmp_path / "out"
    args = argparse.Namespace(
        config=str(experiment),
        out=str(out),
        workers=1,
        data=str(tmp_path / "recflow"),
        format="feather",
        day_pattern="all_stage/2024-01-{day:02d}.feather",
        set=["data.label_mode=ground_truth", "data.preset=recflow"],
    )
    # Ingestion fails above 1% dead letters: read in our units, these days would fail.
    assert cli.run(args) == 0
    # Nothing simulated: out/logs holds only the run's log file (run-<timestamp>.log).
    assert [p.name[:4] for p in (out / "logs").iterdir()] == ["run-"]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["data"]["format"] == "feather"
    [cell] = results["cells"]
    artifacts = json.loads((out / "days" / "day_12" / "artifacts.json").read_text())
    assert artifacts["train_requests"] == 120  # the two training days' requests
    assert cell["train_steps"] == 120 // 16  # one pass, full batches
    assert 0.0 < cell[recall] <= 1.0
    assert str(tmp_path / "recflow") in (out / "results.md").read_text()
    for name in ("recall_by_method.png", "recall_by_day.png", "recall_by_stage.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_data_options_are_the_pipelines(tmp_path: Path) -> None:
    """The experiment's ``data`` section is ``pipeline.config.DataConfig``: its fields, its
    validation, and every ingestion option reaches the ExampleGen."""
    loaded = config.load(
        TINY, ["data.input_base=/logs", "data.format=feather", "data.list_size=44"]
    )
    data = loaded.data_config()
    assert (data.input_base, data.format, data.list_size) == ("/logs", "feather", 44)
    assert data.example_gen_options()["input_format"] == "feather"
    with pytest.raises(ValueError, match="data: unknown field 'formt'"):
        config.load(TINY, ["data.formt=feather"])
    with pytest.raises(ValueError, match="data: train_days is set by eval_days"):
        config.load(TINY, ["data.train_days=[1]"])
    with pytest.raises(ValueError, match="simulator writes parquet or csv"):
        config.load(TINY, ["data.format=feather"])
