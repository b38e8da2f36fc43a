"""``lcron ingest`` (multi-process DirectRunner), day splits and the curated schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.recflow_example_gen import schema, splits
from models import features

ROOT = Path(__file__).resolve().parents[2]


def test_day_splits_keep_the_test_day_apart() -> None:
    config = splits.day_splits([0, 1, 2], [3])
    assert splits.split_patterns(config) == {
        "train": "day_00/*,day_01/*,day_02/*",
        "eval": "day_03/*",
    }
    with pytest.raises(ValueError, match=r"\[2\]"):
        splits.day_splits([1, 2], [2])
    per_day = splits.split_patterns(
        splits.per_day_splits([4, 5], "all_stage/2024-01-{day:02d}.feather")
    )
    assert per_day == {
        "day_04": "all_stage/2024-01-04.feather",
        "day_05": "all_stage/2024-01-05.feather",
    }


def test_curated_schema_file_is_the_generated_one() -> None:
    assert (ROOT / "data" / "schema.pbtxt").read_text() == schema.schema_text()
    built = schema.build_schema(12)
    shapes = {f.name: f.shape.dim[0].size for f in built.feature}
    assert shapes["video_id"] == 12 and shapes["user_id"] == 1
    assert shapes["seq_video_id"] == features.SEQ_LEN
    serving_absent = {f.name for f in built.feature if "SERVING" in f.not_in_environment}
    assert serving_absent == {"stage", "rank_index", "label", "feedback_label"}


@pytest.mark.slow
def test_lcron_ingest_runs_multi_process_and_writes_stats(
    logs, log_dir: Path, tmp_path: Path, capfd
) -> None:
    from pipeline.cli import main

    # One malformed row: a duplicate of day 1's first row.
    frame = logs.make_log(3, 1, first_request=100)
    frame = frame.iloc[[*range(len(frame)), 0]]
    logs.write_log(frame, log_dir / "day_01" / "part-0.parquet")
    out = tmp_path / "out"
    code = main(
        [
            "ingest",
            "--data",
            str(log_dir),
            "--out",
            str(out),
            "--train-days",
            "0",
            "1",
            "--eval-days",
            "2",
        ]
    )
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    per_request = sum(logs.GROUP_COUNTS.values())
    assert stats["rows_read"] == 9 * per_request + 1
    assert stats["rows_dead_lettered"] == 1
    assert stats["dead_letter_reasons"] == {"duplicate:video_id": 1}
    assert stats["requests_written"] == 9
    assert stats["splits"]["train"]["requests_written"] == 6
    beyond = logs.GROUP_COUNTS["rank_pos"] - 10
    assert stats["not_in_examples_reasons"] == {"beyond_group_size:rank_pos": 9 * beyond}
    assert sorted(p.name for p in (out / "examples").iterdir()) == ["Split-eval", "Split-train"]
    letters = list((out / "dead_letters" / "Split-train").glob("*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in letters) == 1

    # The terminal: the stats as JSON on stdout, status lines on stderr; Beam in the log file,
    # with one progress record per unit (a parquet row group), forwarded from worker processes.
    terminal = capfd.readouterr()
    assert json.loads(terminal.out) == {k: v for k, v in stats.items() if k != "splits"}
    (log,) = (out / "logs").glob("run-*.log")
    status = terminal.err.splitlines()
    assert status[0] == f"lcron ingest: full log in {log}"
    assert status[1] == f"ingestion ... 2 splits from {log_dir}"
    assert status[-1].startswith("ingestion done in ")
    assert f"{stats['rows_read']:,} rows read, 1 dead-lettered, 9 requests written" in status[-1]
    text = log.read_text()
    assert text.count("lcron-progress ingestion total=3") == 1  # three one-row-group files
    assert text.count("lcron-progress ingestion +1") == 3


def test_lcron_ingest_rejects_a_bad_split_argument(log_dir: Path, tmp_path: Path, capsys) -> None:
    import argparse

    from components.recflow_example_gen import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--data", str(log_dir), "--out", str(tmp_path), "--split", "oops"])
    assert cli.run(args) == 2
    assert "NAME=GLOBS" in capsys.readouterr().err


def test_a_list_shape_gets_its_own_schema(tmp_path) -> None:
    """The three-stage list (50 candidates, five groups) gets a generated schema; the default
    shape keeps data/schema.pbtxt."""
    assert schema.schema_file(40, 4, tmp_path) == str(schema.DEFAULT_SCHEMA)
    path = schema.schema_file(50, 5, tmp_path)
    assert path.startswith(str(tmp_path)) and "size: 50" in Path(path).read_text()
    assert "max: 4" in Path(path).read_text()  # stage codes 0..4
    assert schema.schema_file(50, 5, tmp_path) == path  # same content, same file


@pytest.mark.slow  # imports TFX
def test_the_groups_reach_the_executor() -> None:
    """The ExampleGen's ``groups`` execution property becomes the executor's ListConfig."""
    from components.recflow_example_gen import executor, listwise

    properties = {
        "input_format": "parquet",
        "list_size": 50,
        "label_mode": "ground_truth",
        "groups": json.dumps(list(listwise.THREE_STAGE_GROUPS)),
    }
    config = executor.config_from_exec_properties(properties)
    assert config.list.groups == listwise.THREE_STAGE_GROUPS
    assert config.list.resolved_group_size == 10
    del properties["groups"]  # absent: the default groups
    assert executor.config_from_exec_properties(properties).list.groups == (
        listwise.GROUPS_BEST_FIRST
    )
