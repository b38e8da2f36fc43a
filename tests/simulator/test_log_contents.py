"""The clean log: layout, manifest, schema and types, and RecFlow's stage semantics per request."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.features import GROUP_SIZE, LOG_COLUMNS, SEQ_LEN, STAGE_CODES
from simulator.simulate import day_dir_name
from simulator.validation import row_errors

GROUPS = list(STAGE_CODES)
DAYS, REQUESTS, SEED = 3, 60, 7  # as in conftest.py's clean_log


def _day(out, day) -> pd.DataFrame:
    return pq.read_table(out / f"day_{day:02d}" / "part-00000.parquet").to_pandas()


@pytest.fixture(scope="module")
def log(clean_log) -> pd.DataFrame:
    out, _ = clean_log
    return pd.concat([_day(out, d).assign(day=d) for d in range(DAYS)], ignore_index=True)


def test_layout_and_manifest(clean_log):
    out, manifest = clean_log
    assert sorted(p.name for p in out.iterdir()) == ["day_00", "day_01", "day_02", "manifest.json"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["schema_version"] == 1
    assert (manifest["seed"], manifest["days"], manifest["requests_per_day"]) == (
        SEED,
        DAYS,
        REQUESTS,
    )
    assert manifest["format"] == "parquet"
    assert manifest["config"]["pool_size"] == 120
    assert manifest["duplicate_rows"] == 0
    for day, entry in enumerate(manifest["per_day"]):
        rows = pq.read_metadata(out / entry["path"]).num_rows
        assert entry["rows"] == entry["valid_rows"] == rows
        assert entry["requests"] == REQUESTS
        assert entry["corrupt_rows"] == 0 and set(entry["corrupt_rows_by_kind"].values()) == {0}
        assert entry["path"] == f"day_{day:02d}/part-00000.parquet"


def test_day_folder_names_widen_past_99_days():
    assert day_dir_name(7, 10) == "day_07"
    assert day_dir_name(7, 100) == "day_007"


def test_schema_is_exactly_log_columns(clean_log):
    out, _ = clean_log
    schema = pq.read_schema(out / "day_00" / "part-00000.parquet")
    assert schema.names == list(LOG_COLUMNS)
    expected = {"int": pa.int64(), "float": pa.float64(), "int_list": pa.list_(pa.int64())}
    for name, kind in LOG_COLUMNS.items():
        assert schema.field(name).type == expected[kind], name


def test_every_row_is_valid_and_unique(log):
    rows = pa.Table.from_pandas(log.drop(columns="day")).to_pylist()
    assert [r for r in rows if row_errors(r)] == []
    assert not log.duplicated(["request_id", "video_id"]).any()
    assert log.isna().sum().sum() == 0


def test_per_request_groups_and_flags(log):
    assert log["request_id"].nunique() == DAYS * REQUESTS
    per_request = log.groupby("request_id")[GROUPS].sum()
    # rank_pos always all 10; the other groups up to group_size (enough candidates here).
    assert (per_request == GROUP_SIZE).all().all()
    assert (log[GROUPS].sum(axis=1) == 1).all()

    pos = log[log.rank_pos == 1]
    assert pos.groupby("request_id").rank_index.apply(lambda s: sorted(s) == list(range(10))).all()
    assert (
        pos.groupby("request_id").rerank_index.apply(lambda s: sorted(s) == list(range(10))).all()
    )
    assert (log[log.rank_neg == 1].rank_index >= GROUP_SIZE).all()
    unranked = log[(log.coarse_neg == 1) | (log.prerank_neg == 1)]
    assert (unranked.rank_index == -1).all() and (unranked.rerank_index == -1).all()

    # Exposure: the re-ranking's top k of the rank_pos items, rerank_pos == realshow.
    assert (log[log.realshow == 1].rank_pos == 1).all()
    assert (log.rerank_pos == log.realshow).all()
    assert (log.rerank_neg == (log.rank_pos == 1) & (log.realshow == 0)).all()
    shown = pos.groupby("request_id").apply(
        lambda g: sorted(g.rerank_index[g.realshow == 1]) == list(range(g.realshow.sum()))
    )
    assert shown.all()
    config_min, config_max = 4, 8  # SimulatorConfig's min_exposed / max_exposed defaults
    counts = pos.groupby("request_id").realshow.sum()
    assert counts.between(config_min, config_max).all()


def test_feedback_only_on_exposed_items(log):
    hidden = log[log.realshow == 0]
    for name in ("effective_view", "long_view", "like", "follow", "forward", "comment"):
        assert (hidden[name] == 0).all(), name
    assert (hidden.playing_time == 0.0).all()
    shown = log[log.realshow == 1]
    assert 0.1 < shown.effective_view.mean() < 0.9
    assert (shown.long_view <= shown.effective_view).all()
    assert (shown.like <= shown.effective_view).all()
    assert (shown.playing_time <= shown.duration + 1e-9).all()


def test_times_ids_and_new_items(clean_log, log):
    _, manifest = clean_log
    for entry in manifest["per_day"]:
        day = log[log.day == entry["day"]]
        assert day.request_timestamp.between(
            entry["start_timestamp_ms"], entry["end_timestamp_ms"] - 1
        ).all()
    assert (log.upload_timestamp <= log.request_timestamp).all()
    # Every request's context is constant over its rows.
    context = ["request_timestamp", "user_id", "device_id", "age", "gender", "province"]
    assert (log.groupby("request_id")[context].nunique() == 1).all().all()
    # Videos uploaded during a day show up in that day's candidates.
    fresh = log[log.upload_timestamp >= manifest["per_day"][1]["start_timestamp_ms"]]
    assert not fresh.empty and set(fresh.day) <= {1, 2}
    first_seen_users = log.groupby("user_id").day.min()
    assert (first_seen_users > 0).any()  # new users arrive after day 0


def test_behaviour_sequences_follow_past_effective_views(log):
    """A request's sequence = the user's effective views since their previous request (last
    watched first), then the previous request's sequence, capped at SEQ_LEN."""
    requests = log.sort_values("request_timestamp").groupby("request_id", sort=False)
    last_seq: dict[int, list[int]] = {}
    checked = 0
    for _, rows in requests:
        user = int(rows.user_id.iloc[0])
        seq = list(rows.seq_video_id.iloc[0])
        assert all(list(s) == seq for s in rows.seq_video_id)
        assert len(seq) <= SEQ_LEN
        authors = list(rows.seq_author_id.iloc[0])
        assert len(authors) == len(seq) == len(rows.seq_category_level_two.iloc[0])
        if user in last_seq:
            assert seq == last_seq[user], f"user {user}"
            checked += 1
        viewed = rows[rows.effective_view == 1].sort_values("rerank_index", ascending=False)
        last_seq[user] = (list(viewed.video_id) + seq)[:SEQ_LEN]
    assert checked > 20
    # Authors and categories in the sequence are the videos' own.
    video_author = dict(zip(log.video_id, log.author_id, strict=False))
    row = log[log.seq_video_id.map(len) > 0].iloc[0]
    for video, author in zip(row.seq_video_id, row.seq_author_id, strict=True):
        if video in video_author:
            assert video_author[video] == author
