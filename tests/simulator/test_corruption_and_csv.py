"""Corrupted rows are exactly the ones a validator rejects; CSV holds the same rows as Parquet."""

from __future__ import annotations

import csv
import math

import pyarrow.parquet as pq
import pytest

from simulator import simulate
from simulator.corruption import KINDS
from simulator.validation import parse_csv_row, row_errors, row_key
from simulator.writer import ARROW_SCHEMA

DAYS, REQUESTS, SEED = 2, 40, 11
FRACTION = 0.2


def _run(config, out, **kwargs):
    return simulate(config, out, days=DAYS, requests_per_day=REQUESTS, seed=SEED, **kwargs)


def _read_parquet(path) -> list[dict]:
    table = pq.read_table(path)
    assert table.schema.equals(ARROW_SCHEMA), "corrupted files keep the one schema"
    return table.to_pylist()


def _read_csv(path) -> list[tuple[dict, list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [parse_csv_row(fields) for fields in csv.DictReader(f)]


def _split(rows: list[dict]) -> tuple[list[dict], int, int]:
    """Applies the reference validator: (kept rows, malformed count, duplicate count)."""
    kept, seen, malformed, duplicates = [], set(), 0, 0
    for row in rows:
        if row_errors(row):
            malformed += 1
        elif row_key(row) in seen:
            duplicates += 1
        else:
            seen.add(row_key(row))
            kept.append(row)
    return kept, malformed, duplicates


@pytest.fixture(scope="module")
def clean_rows(small_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean_ref")
    manifest = _run(small_config, out)
    return [_read_parquet(out / d["path"]) for d in manifest["per_day"]]


def test_parquet_corruption_counts_match_manifest(small_config, tmp_path, clean_rows):
    manifest = _run(small_config, tmp_path, corrupt_fraction=FRACTION)
    assert set(manifest["per_day"][0]["corrupt_rows_by_kind"]) == set(KINDS)
    for entry, clean in zip(manifest["per_day"], clean_rows, strict=True):
        rows = _read_parquet(tmp_path / entry["path"])
        assert len(rows) == entry["rows"]
        assert entry["corrupt_rows"] / entry["rows"] == pytest.approx(FRACTION, abs=0.03)
        kept, malformed, duplicates = _split(rows)
        by_kind = entry["corrupt_rows_by_kind"]
        assert duplicates == by_kind["duplicate"] == entry["duplicate_rows"]
        assert malformed == entry["corrupt_rows"] - duplicates
        assert all(count > 0 for count in by_kind.values()), by_kind
        # Corruption only adds rows: what survives validation is the clean log, in order.
        assert kept == clean
    assert manifest["duplicate_rows"] == sum(d["duplicate_rows"] for d in manifest["per_day"])
    nan_rows = [r for r in rows if r["playing_time"] is not None and math.isnan(r["playing_time"])]
    assert nan_rows, "a NaN lands in the float column"


def test_csv_round_trip_equals_parquet(small_config, tmp_path, clean_rows):
    manifest = _run(small_config, tmp_path, fmt="csv")
    assert manifest["format"] == "csv"
    for entry, clean in zip(manifest["per_day"], clean_rows, strict=True):
        assert entry["path"].endswith("part-00000.csv")
        parsed = _read_csv(tmp_path / entry["path"])
        assert [errors for _, errors in parsed if errors] == []
        assert [row for row, _ in parsed] == clean


def test_csv_corruption_counts_match_manifest(small_config, tmp_path, clean_rows):
    manifest = _run(small_config, tmp_path, fmt="csv", corrupt_fraction=FRACTION)
    for entry, clean in zip(manifest["per_day"], clean_rows, strict=True):
        parsed = _read_csv(tmp_path / entry["path"])
        assert len(parsed) == entry["rows"]
        unparseable = sum(1 for _, errors in parsed if errors)
        kept, malformed, duplicates = _split([row for row, errors in parsed if not errors])
        by_kind = entry["corrupt_rows_by_kind"]
        assert by_kind["unparseable"] > 0
        assert unparseable >= by_kind["unparseable"]  # 'nan' in an int column fails to parse too
        assert unparseable + malformed == entry["corrupt_rows"] - by_kind["duplicate"]
        assert duplicates == by_kind["duplicate"]
        assert kept == clean
