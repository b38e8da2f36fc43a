"""The Beam ingestion on DirectRunner over simulated logs with corrupted rows.

Truth comes from the simulator: with the same seed, a log with ``corrupt_fraction=0`` holds
exactly the valid rows of the corrupted one, and its manifest counts the corrupted rows.
"""

from __future__ import annotations

import collections
import glob
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.recflow_example_gen import beam_pipeline, listwise
from models import features

pytestmark = pytest.mark.slow

DAYS, REQUESTS, SEED, CORRUPT = 2, 40, 11, 0.05
IN_PROCESS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def _simulate(out: Path, fmt: str, corrupt: float) -> dict:
    from simulator import SimulatorConfig, simulate

    return simulate(
        SimulatorConfig(),
        out,
        days=DAYS,
        requests_per_day=REQUESTS,
        seed=SEED,
        fmt=fmt,
        corrupt_fraction=corrupt,
    )


def _read_examples(split_dir: str) -> list[dict[str, np.ndarray]]:
    files = sorted(glob.glob(os.path.join(split_dir, "data_tfrecord-*.gz")))
    spec = listwise.example_feature_spec()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return [{k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()} for r in dataset]


def _dead_letters(out: Path) -> list[dict]:
    letters = []
    for path in glob.glob(str(out / "dead_letters" / "Split-*" / "*.jsonl")):
        letters += [json.loads(line) for line in Path(path).read_text().splitlines()]
    return letters


@pytest.fixture(scope="module", params=["parquet", "csv"])
def ingested(request, tmp_path_factory) -> dict:
    fmt = request.param
    tmp = tmp_path_factory.mktemp(f"ingest_{fmt}")
    manifest = _simulate(tmp / "logs", fmt, CORRUPT)
    _simulate(tmp / "clean", "parquet", 0.0)
    clean = pd.concat([pd.read_parquet(p) for p in sorted((tmp / "clean").glob("day_*/*.parquet"))])
    splits = {"train": "day_00/*", "eval": "day_01/*"}
    # A log this corrupted is refused by default (1%): these tests look at its dead letters.
    config = beam_pipeline.IngestConfig(input_format=fmt, max_dead_letter_share=0.2)
    stats = beam_pipeline.run_ingestion(
        splits, str(tmp / "logs"), str(tmp / "out"), config, IN_PROCESS
    )
    return {"manifest": manifest, "clean": clean, "stats": stats, "out": tmp / "out", "fmt": fmt}


def test_counts_add_up_and_match_the_simulator(ingested) -> None:
    stats, manifest = ingested["stats"], ingested["manifest"]
    assert manifest["corrupt_rows"] > 0
    assert stats["rows_read"] == manifest["rows"]
    assert stats["rows_read"] == (
        stats["rows_in_examples"] + stats["rows_dead_lettered"] + stats["rows_not_in_examples"]
    )
    assert stats["rows_dead_lettered"] == manifest["corrupt_rows"]
    duplicates = sum(n for k, n in stats["dead_letter_reasons"].items() if k.startswith("dup"))
    assert duplicates == manifest["duplicate_rows"]
    on_disk = json.loads((ingested["out"] / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    for name, day in (("train", 0), ("eval", 1)):
        split = stats["splits"][name]
        assert split["rows_read"] == manifest["per_day"][day]["rows"]
        assert split["rows_dead_lettered"] == manifest["per_day"][day]["corrupt_rows"]


def test_every_dead_letter_has_a_reason_naming_a_field(ingested) -> None:
    letters = _dead_letters(ingested["out"])
    assert len(letters) == ingested["manifest"]["corrupt_rows"]
    for letter in letters:
        assert letter["reason"] and letter["kind"]
        assert letter["field"] in letter["reason"] or letter["kind"] in (
            "duplicate",
            "contradictory_stage_flags",
        )
        assert letter["source"].endswith(ingested["fmt"]) and letter["row"] >= 0
        assert set(letter["record"]) >= set(features.LOG_COLUMNS) - {"seq_video_id"}
    # One letter per row: no row is reported twice.
    assert len({(d["source"], d["row"]) for d in letters}) == len(letters)


def test_one_example_per_request_with_every_candidate_once(ingested) -> None:
    clean = ingested["clean"]
    stage_of = np.select(
        [clean[g] == 1 for g in features.STAGE_CODES], list(features.STAGE_CODES.values()), -9
    )
    clean = clean.assign(stage=stage_of)
    for name, day in (("train", 0), ("eval", 1)):
        examples = _read_examples(str(ingested["out"] / "examples" / f"Split-{name}"))
        first_id = ingested["manifest"]["per_day"][day]["first_request_id"]
        day_rows = clean[clean["request_id"].between(first_id, first_id + REQUESTS - 1)]
        by_request = dict(iter(day_rows.groupby("request_id")))
        wanted = {r for r, g in by_request.items() if (g["rank_pos"] == 1).any()}
        got = [int(ex["request_id"][0]) for ex in examples]
        assert sorted(got) == sorted(wanted)
        for ex in examples:
            rows = by_request[int(ex["request_id"][0])]
            real = ex["mask"] == 1
            assert len(set(ex["video_id"][real])) == real.sum() == len(rows)  # each once
            expected = {}
            for _, row in rows.iterrows():
                label = 3 + (10 - row["rank_index"]) / 10 if row["stage"] == 3 else row["stage"]
                expected[row["video_id"]] = (row["stage"], label)
            for video, stage, label in zip(
                ex["video_id"][real], ex["stage"][real], ex["label"][real], strict=False
            ):
                assert expected[video][0] == stage
                assert expected[video][1] == pytest.approx(label, rel=1e-6)
            assert ex["user_id"][0] == rows["user_id"].iloc[0]


def test_empty_split_pattern_fails_by_name(tmp_path: Path) -> None:
    (tmp_path / "day_00").mkdir()
    (tmp_path / "day_00" / "part-0.parquet").write_bytes(b"")
    (tmp_path / "day_07").mkdir()
    (tmp_path / "day_07" / "_SUCCESS").write_bytes(b"")  # markers are not data
    with pytest.raises(ValueError, match="day_07"):
        beam_pipeline.match_split_files(str(tmp_path), "day_00/*,day_07/*")


def test_counts_that_do_not_add_up_fail_loudly() -> None:
    broken = collections.Counter(rows_read=5, rows_in_examples=3)
    with pytest.raises(RuntimeError, match="lost rows"):
        beam_pipeline.combine_stats(
            {"x": beam_pipeline.split_stats(broken)}, beam_pipeline.IngestConfig()
        )
