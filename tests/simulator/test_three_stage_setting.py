"""The paper's three-stage setting on a simulated log (``rerank_candidates = 20``): 50 logged
candidates per request, 10 in each of rerank_pos, rerank_neg, rank_neg, coarse_neg, prerank_neg,
valid by the simulator's rules and ingested into full lists of 50."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.recflow_example_gen import listwise, rows
from simulator import SimulatorConfig, simulate
from simulator.truth import load_day
from simulator.validation import row_errors

DAYS, REQUESTS, SEED = 2, 60, 11


@pytest.fixture(scope="module")
def three_stage_log(small_config, tmp_path_factory) -> tuple[Path, dict, SimulatorConfig]:
    config = dataclasses.replace(small_config, coarse_keep=40, rerank_candidates=20)
    out = tmp_path_factory.mktemp("three_stage")
    manifest = simulate(
        config, out, days=DAYS, requests_per_day=REQUESTS, seed=SEED, corrupt_fraction=0.05
    )
    return out, manifest, config


def _clean_rows(out: Path, day: int) -> list[dict]:
    """The day's valid rows, second copies of a (request, video) dropped."""
    logged = pq.read_table(next((out / f"day_{day:02d}").iterdir())).to_pylist()
    valid = {}
    for r in logged:
        if not row_errors(r, 20):
            valid.setdefault((r["request_id"], r["video_id"]), r)
    return list(valid.values())


def test_each_request_logs_ten_per_group_of_the_three_stage_setting(three_stage_log) -> None:
    out, _, _ = three_stage_log
    by_request: dict[int, list[dict]] = {}
    for r in _clean_rows(out, 1):
        by_request.setdefault(r["request_id"], []).append(r)
    assert len(by_request) == REQUESTS
    for members in by_request.values():
        count = {
            g: sum(r[g] for r in members)
            for g in (
                "rank_pos",
                "rank_neg",
                "coarse_neg",
                "prerank_neg",
                "rerank_pos",
                "rerank_neg",
            )
        }
        assert count == {
            "rank_pos": 20,
            "rank_neg": 10,
            "coarse_neg": 10,
            "prerank_neg": 10,
            "rerank_pos": 10,
            "rerank_neg": 10,
        }
        ranked = sorted(r["rank_index"] for r in members if r["rank_pos"])
        assert ranked == list(range(20))
        assert all(20 <= r["rank_index"] < 40 for r in members if r["rank_neg"])
        # Re-ranking's top 10 are rerank_pos; the exposed items are the first k of them.
        assert sorted(r["rerank_index"] for r in members if r["rerank_pos"]) == list(range(10))
        assert sorted(r["rerank_index"] for r in members if r["rerank_neg"]) == list(range(10, 20))
        shown = sorted(r["rerank_index"] for r in members if r["realshow"])
        assert 4 <= len(shown) <= 8 and shown == list(range(len(shown)))
        assert all(
            r["playing_time"] == 0 and r["effective_view"] == 0
            for r in members
            if not r["realshow"]
        )


def test_corrupted_rows_still_add_up(three_stage_log) -> None:
    out, manifest, _ = three_stage_log
    for day, entry in enumerate(manifest["per_day"]):
        logged = pq.read_table(next((out / f"day_{day:02d}").iterdir())).to_pylist()
        bad = sum(1 for r in logged if row_errors(r, 20))
        keys = [(r["request_id"], r["video_id"]) for r in logged if not row_errors(r, 20)]
        duplicates = len(keys) - len(set(keys))
        assert bad + duplicates == entry["corrupt_rows"] > 0
        # Read with the two-stage rule (10 rank_pos), the deeper rank_pos rows are not valid.
        assert sum(1 for r in logged if row_errors(r)) > bad


def test_the_reference_validator_checks_the_re_ranking_flags(three_stage_log) -> None:
    out, _, _ = three_stage_log
    row = next(r for r in _clean_rows(out, 0) if r["rerank_neg"])
    assert row_errors(row, 20) == []
    assert any("rerank_pos/rerank_neg" in e for e in row_errors({**row, "rerank_neg": 0}, 20))
    assert any("realshow" in e for e in row_errors({**row, "realshow": 1}, 20))
    negative = next(r for r in _clean_rows(out, 0) if r["coarse_neg"])
    assert any("rerank_pos/rerank_neg" in e for e in row_errors({**negative, "rerank_pos": 1}, 20))


def test_ingestion_fills_every_slot_of_the_three_stage_list(three_stage_log) -> None:
    import tensorflow as tf

    out, _, _ = three_stage_log
    path = next((out / "day_01").iterdir())
    validated = rows.validate_table(pq.read_table(path), str(path), 0, rows.ValidationConfig())
    chunks: dict[int, list] = {}
    for request_id, chunk in rows.split_by_request(validated):
        chunks.setdefault(request_id, []).append(chunk)
    config = listwise.ListConfig(list_size=50, groups=listwise.THREE_STAGE_GROUPS)
    spec = listwise.example_feature_spec(50)
    truth = {(r["request_id"], r["video_id"]) for r in _clean_rows(out, 1) if r["rerank_pos"]}
    for request_id, parts in chunks.items():
        result = listwise.build_request(request_id, parts, config)
        ex = {k: v.numpy() for k, v in tf.io.parse_single_example(result.example, spec).items()}
        assert ex["mask"].sum() == 50, "every slot holds a real candidate"
        assert np.bincount(ex["stage"], minlength=5).tolist() == [10] * 5
        gt = {int(v) for v, s in zip(ex["video_id"], ex["stage"], strict=True) if s == 4}
        assert gt == {v for rid, v in truth if rid == request_id}


def test_the_replay_reads_re_rankings_top_ten_as_the_production_feed(three_stage_log) -> None:
    out, _, _ = three_stage_log
    requests = load_day(out, 1).requests
    clean = _clean_rows(out, 1)
    for i in range(3):
        rid = int(requests.context["request_id"][i])
        top = sorted(
            (r["rerank_index"], r["video_id"])
            for r in clean
            if r["request_id"] == rid and r["rerank_pos"]
        )
        assert requests.production[i].tolist() == [v for _, v in top]


def test_rerank_candidates_is_checked() -> None:
    with pytest.raises(ValueError, match="rerank_candidates < coarse_keep"):
        SimulatorConfig(rerank_candidates=40)
    with pytest.raises(ValueError, match="rerank_candidates"):
        SimulatorConfig(rerank_candidates=9)
