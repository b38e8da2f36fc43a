"""Row validation: every kind of malformed row is a dead letter naming its field; valid rows
(zeros included) pass unchanged. Runs on hand-built tables, no Beam."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from components.recflow_example_gen import rows
from models import features

CONFIG = rows.ValidationConfig()


def _validate(frame, config=CONFIG) -> rows.ValidatedRows:
    # from_pandas=False keeps NaN a NaN (pandas conversion would make it a null).
    table = pa.table({c: pa.array(frame[c].tolist(), from_pandas=False) for c in frame.columns})
    return rows.validate_table(table, "mem", 0, config)


def _only_letter(result: rows.ValidatedRows) -> dict:
    assert len(result.dead_letters) == 1, result.dead_letters
    return result.dead_letters[0]


def test_clean_rows_all_pass_with_their_zeros(logs) -> None:
    frame = logs.make_log(2)
    result = _validate(frame)
    assert result.dead_letters == []
    assert result.rows_read == len(frame) == len(result.row)
    np.testing.assert_array_equal(result.columns["gender"], frame["gender"].to_numpy())
    assert (result.columns["gender"] == 0).all()  # zeros are values, not missing
    seq = result.sequences["seq_video_id"]
    assert seq.shape == (len(frame), features.SEQ_LEN)
    np.testing.assert_array_equal(seq[0, :2], [7, features.PAD_ID])  # request 0: one item


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("video_id", None, "null"),
        ("user_id", -3, "negative"),
        ("playing_time", math.nan, "nan"),
        ("playing_time", -1.0, "negative"),
        ("request_timestamp", 5, "out_of_range"),
        ("upload_timestamp", 5_000_000_000_000, "out_of_range"),
        ("realshow", 2, "out_of_range"),
        ("like", 3, "out_of_range"),
        ("rank_index", None, "null"),
    ],
)
def test_each_malformed_field_is_named(logs, column: str, value, kind: str) -> None:
    frame = logs.make_log(1)
    if value is None:  # a null in an int column (pandas would otherwise make it NaN)
        frame[column] = frame[column].astype(object)
    frame.at[4, column] = value
    letter = _only_letter(_validate(frame))
    assert (letter["kind"], letter["field"], letter["row"]) == (kind, column, 4)
    assert column in letter["reason"]
    assert letter["record"]["video_id"] == frame.at[4, "video_id"]


def test_float_id_column_with_nan_is_read_as_integers(logs) -> None:
    # Parquet writers turn an int column holding NaN into float64: 3.0 is still the id 3.
    frame = logs.make_log(1)
    frame["author_id"] = frame["author_id"].astype(float)
    frame.at[2, "author_id"] = math.nan
    frame.at[3, "author_id"] = 1.5
    result = _validate(frame)
    assert [(d["row"], d["kind"]) for d in result.dead_letters] == [(2, "nan"), (3, "not_integral")]
    assert result.columns["author_id"].dtype == np.int64


def test_upload_after_request_is_out_of_range(logs) -> None:
    frame = logs.make_log(1)
    frame.at[0, "upload_timestamp"] = frame.at[0, "request_timestamp"] + 1
    letter = _only_letter(_validate(frame))
    assert (letter["kind"], letter["field"]) == ("out_of_range", "upload_timestamp")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rank_neg": 1}, "stage"),  # two groups on a rank_pos row
        ({"rank_pos": 0}, "stage"),  # no group
        ({"rank_index": -1}, "rank_index"),  # rank_pos without a position
    ],
)
def test_contradictory_stage_flags(logs, changes: dict, field: str) -> None:
    frame = logs.make_log(1)
    row = int(np.flatnonzero(frame["rank_pos"] == 1)[0])
    for column, value in changes.items():
        frame.at[row, column] = value
    letter = _only_letter(_validate(frame))
    assert (letter["kind"], letter["field"]) == ("contradictory_stage_flags", field)


def test_exposed_item_dropped_before_the_ranking_top_is_contradictory(logs) -> None:
    frame = logs.make_log(1)
    row = int(np.flatnonzero(frame["coarse_neg"] == 1)[0])
    frame.at[row, "realshow"] = 1
    letter = _only_letter(_validate(frame))
    assert (letter["kind"], letter["field"]) == ("contradictory_stage_flags", "realshow")


def test_sequences_negative_null_and_unequal_lengths(logs) -> None:
    frame = logs.make_log(3)
    frame.at[0, "seq_video_id"] = [4, -2]
    frame.at[0, "seq_author_id"] = [1, 1]
    frame.at[0, "seq_category_level_two"] = [1, 1]
    frame.at[1, "seq_author_id"] = None
    frame.at[2, "seq_category_level_two"] = []
    result = _validate(frame)
    got = [(d["row"], d["kind"], d["field"]) for d in result.dead_letters]
    assert got == [
        (0, "negative", "seq_video_id"),
        (1, "null", "seq_author_id"),
        (2, "contradictory_sequence", "seq_video_id"),
    ]


def test_sequence_is_truncated_to_the_most_recent_items(logs) -> None:
    frame = logs.make_log(1).head(1)
    long = list(range(features.SEQ_LEN + 7))
    for name in ("seq_video_id", "seq_author_id", "seq_category_level_two"):
        frame.at[0, name] = long
    result = _validate(frame)
    np.testing.assert_array_equal(result.sequences["seq_video_id"][0], long[: features.SEQ_LEN])


def test_missing_rank_index_is_optional_only_when_allowed(logs) -> None:
    frame = logs.make_log(1)
    frame["rank_index"] = frame["rank_index"].astype(object)
    row = int(np.flatnonzero(frame["prerank_neg"] == 1)[0])
    frame.at[row, "rank_index"] = None
    assert _only_letter(_validate(frame))["field"] == "rank_index"
    lenient = rows.ValidationConfig(allow_missing_rank_index=True)
    result = _validate(frame, lenient)
    assert result.dead_letters == []
    assert result.columns["rank_index"][row] == features.PAD_ID


def test_missing_required_column_fails_naming_file_and_column(logs) -> None:
    table = pa.Table.from_pandas(logs.make_log(1).drop(columns=["duration"]), preserve_index=False)
    with pytest.raises(ValueError, match=r"f\.parquet.*duration"):
        rows.validate_table(table, "f.parquet", 0, CONFIG)


def _read_all(path: Path, fmt: str) -> rows.ValidatedRows:
    results = [
        rows.validate_table(rows.read_unit(p, fmt, unit), p, first, CONFIG)
        for p, unit, first in rows.plan_units(str(path), fmt)
    ]
    assert len(results) == 1
    return results[0]


def test_csv_unparseable_and_null_cells(logs, tmp_path: Path) -> None:
    path = logs.write_log(logs.make_log(2), tmp_path / "day.csv", "csv")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for line_no, column, text in ((1, "age", "abc"), (2, "video_id", ""), (3, "user_id", "nan")):
        cells = lines[line_no].split(",")
        cells[header.index(column)] = text
        lines[line_no] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    result = _read_all(path, "csv")
    got = [(d["row"], d["kind"], d["field"]) for d in result.dead_letters]
    assert got == [(0, "unparseable", "age"), (1, "null", "video_id"), (2, "nan", "user_id")]
    assert result.rows_read == len(lines) - 1
    # An empty sequence cell is an empty history, not a null.
    assert (result.sequences["seq_video_id"][:, 0] != features.PAD_ID).all()


def test_feather_without_sequences_reads_with_empty_history(logs, tmp_path: Path) -> None:
    frame = logs.make_log(2)
    path = logs.write_log(frame, tmp_path / "all_stage.feather", "feather")
    result = _read_all(path, "feather")
    assert result.dead_letters == [] and result.rows_read == len(frame)
    assert (result.sequences["seq_video_id"] == features.PAD_ID).all()
    np.testing.assert_array_equal(result.columns["video_id"], frame["video_id"].to_numpy())


def test_parquet_row_groups_are_separate_units_with_global_row_numbers(
    logs, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    frame = logs.make_log(2)
    path = tmp_path / "day.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=10)
    units = rows.plan_units(str(path), "parquet")
    assert [first for _, _, first in units] == list(range(0, len(frame), 10))
    got = np.concatenate(
        [
            rows.validate_table(rows.read_unit(p, "parquet", u), p, f, CONFIG).row
            for p, u, f in units
        ]
    )
    np.testing.assert_array_equal(got, np.arange(len(frame)))
