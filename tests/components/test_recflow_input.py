"""A RecFlow download as input: per-column time units and the ``recflow`` preset, the
no-silent-success check of the ingestion, the restricted unpickler and ``convert-recflow``.
Fast: no Beam (the Beam and pipeline paths run in tests/pipeline/test_recflow_readme.py)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.recflow_example_gen import (
    beam_pipeline,
    presets,
    recflow_convert,
    rows,
    safe_pickle,
)
from models import features


def _validate(frame: pd.DataFrame, config: rows.ValidationConfig) -> rows.ValidatedRows:
    table = pa.table({c: pa.array(frame[c].tolist(), from_pandas=False) for c in frame.columns})
    return rows.validate_table(table, "mem", 0, config)


def _in_recflow_units(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["upload_timestamp"] = out["upload_timestamp"] // 1000  # s
    out["duration"] = out["duration"] * 1000  # ms
    out["playing_time"] = out["playing_time"] * 1000.0  # ms
    return out


# --- time units and presets ------------------------------------------------------------------


def test_recflow_units_are_dead_letters_by_default_and_valid_with_the_preset(logs) -> None:
    ours = logs.make_log(2)
    theirs = _in_recflow_units(ours)
    default = _validate(theirs, rows.ValidationConfig())
    assert {(d["kind"], d["field"]) for d in default.dead_letters} == {
        ("out_of_range", "upload_timestamp")
    }
    assert len(default.dead_letters) == len(theirs)  # every row: the symptom

    converted = _validate(theirs, presets.validation_config("recflow"))
    reference = _validate(ours, rows.ValidationConfig())
    assert converted.dead_letters == []
    for name in ("request_timestamp", "upload_timestamp", "duration", "playing_time"):
        np.testing.assert_array_equal(converted.columns[name], reference.columns[name], name)


def test_coarser_units_round_to_the_nearest_and_finer_ones_guard_overflow(logs) -> None:
    frame = logs.make_log(1).iloc[:3].copy()
    frame["duration"] = [1499, 1500, 61_000]  # ms -> s
    frame["upload_timestamp"] = [1_600_000_000, 1_600_000_001, 2**62]  # s -> ms; the last overflows
    frame["request_timestamp"] = 1_700_000_000_000
    config = rows.ValidationConfig(time_units={"duration": "ms", "upload_timestamp": "s"})
    result = _validate(frame, config)
    np.testing.assert_array_equal(result.columns["duration"], [1, 2])
    np.testing.assert_array_equal(
        result.columns["upload_timestamp"], [1_600_000_000_000, 1_600_000_001_000]
    )
    letter = result.dead_letters[0]
    assert (letter["kind"], letter["field"], letter["row"]) == (
        "out_of_range",
        "upload_timestamp",
        2,
    )
    assert letter["record"]["upload_timestamp"] == 2**62  # the row as read, not converted


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"time_units": {"video_id": "s"}}, "not a time column"),
        ({"time_units": {"duration": "minutes"}}, "unit 'minutes'"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_bad_validation_fields_fail_by_name(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        presets.validation_fields("default", fields)


def test_preset_fields_merge_with_overrides() -> None:
    with pytest.raises(ValueError, match="unknown preset 'recflw'"):
        presets.validation_fields("recflw")
    fields = presets.validation_fields("recflow", {"time_units": {"playing_time": "s"}})
    assert fields["time_units"] == {"upload_timestamp": "s", "duration": "ms", "playing_time": "s"}
    assert fields["allow_missing_rank_index"] is True
    assert presets.PRESETS["recflow"]["time_units"]["playing_time"] == "ms"  # not mutated


def test_pipeline_config_takes_the_preset_and_rejects_unknown_ones() -> None:
    from pipeline.config import load_config

    config = load_config(None, ["data.preset=recflow", "data.validation.time_units.duration=s"])
    assert config.data.preset == "recflow"
    assert config.data.validation == {"time_units": {"duration": "s"}}
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(None, ["data.preset=kuairand"])


# --- no silent success -----------------------------------------------------------------------


def _split(read: int, dead: int, written: int, reasons: dict[str, int]) -> dict:
    return {
        "rows_read": read,
        "rows_dead_lettered": dead,
        "rows_in_examples": read - dead,
        "rows_not_in_examples": 0,
        "requests_written": written,
        "requests_without_ground_truth": 0,
        "dead_letter_reasons": reasons,
        "not_in_examples_reasons": {},
    }


def test_check_stats_fails_above_the_dead_letter_share_naming_the_top_reasons(
    tmp_path: Path,
) -> None:
    letters = tmp_path / "Split-train"
    letters.mkdir()
    first = {"source": "a.feather", "row": 3, "kind": "out_of_range", "field": "upload_timestamp"}
    first["reason"] = "field 'upload_timestamp' outside [...] ms"
    (letters / "dead_letters-00000-of-00001.jsonl").write_text(json.dumps(first) + "\n")
    stats = {
        "splits": {
            "train": _split(1000, 20, 40, {"out_of_range:upload_timestamp": 15, "null:x": 5}),
            "eval": _split(1000, 10, 40, {"null:x": 10}),  # exactly 1%: allowed
        }
    }
    config = beam_pipeline.IngestConfig()
    with pytest.raises(beam_pipeline.IngestionError) as raised:
        beam_pipeline.check_stats(stats, config, str(tmp_path))
    message = str(raised.value)
    assert "split 'train'" in message and "split 'eval'" not in message
    assert "20 of 1,000 rows (2.0%)" in message
    assert message.index("out_of_range:upload_timestamp: 15") < message.index("null:x: 5")
    assert "a.feather row 3" in message and "--preset recflow" in message
    # A higher threshold lets the same split pass.
    beam_pipeline.check_stats(
        stats, beam_pipeline.IngestConfig(max_dead_letter_share=0.05), str(tmp_path)
    )


def test_check_stats_fails_on_an_empty_split(tmp_path: Path) -> None:
    stats = {"splits": {"eval": _split(0, 0, 0, {})}}
    with pytest.raises(beam_pipeline.IngestionError, match="split 'eval': no example written"):
        beam_pipeline.check_stats(stats, beam_pipeline.IngestConfig(), str(tmp_path))


# --- the restricted unpickler ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_dicts_of_numpy_arrays_load(protocol: int) -> None:
    payload = {
        np.int64(7): np.arange(20, dtype=np.int64).reshape(2, 10),
        8: {"rank_pos": np.zeros((0, 8), np.int32), "list": [1, 2, (3, 4.5)]},
    }
    loaded = safe_pickle.load(pickle.dumps(payload, protocol=protocol))
    np.testing.assert_array_equal(loaded[7], payload[np.int64(7)])
    assert loaded[8]["list"] == [1, 2, (3, 4.5)]
    assert loaded[8]["rank_pos"].dtype == np.int32


class _RunsCode:
    """What a malicious pickle does: its reduce calls os.system on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({1: np.zeros((50, 10), np.int64), 2: _RunsCode(marker)})
    # The same bytes do run code with the standard unpickler (the test can fail).
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(safe_pickle.UnsafePickleError, match=r"posix\.system|os\.system"):
        safe_pickle.load(blob, "seq.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"f": eval},
        {"a": np.array([{"x": 1}], dtype=object)},
        {"ordered": __import__("collections").OrderedDict(a=1)},
    ],
    ids=["builtin_function", "object_array", "other_class"],
)
def test_other_globals_and_object_arrays_are_refused(payload) -> None:
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.load(pickle.dumps(payload, protocol=4))


# --- convert-recflow -------------------------------------------------------------------------


def test_sequence_rows_become_most_recent_first_columns() -> None:
    seq = np.zeros((50, 10), np.int64)
    seq[47:, 0] = [10, 11, 12]  # oldest .. newest, right-aligned
    seq[47:, 1] = [20, 21, 22]
    seq[47:, 2] = [30, 31, 32]
    seq[47:, 7] = [1_000, 2_000, 3_000]
    seq[:47, 0] = 99  # invalid rows (timestamp 0) whatever they hold
    out = recflow_convert.recent_first(seq, "x.pkl", 1)
    assert out["seq_video_id"].tolist() == [12, 11, 10]
    assert out["seq_author_id"].tolist() == [22, 21, 20]
    assert out["seq_category_level_two"].tolist() == [32, 31, 30]
    with pytest.raises(recflow_convert.ConversionError, match="shape"):
        recflow_convert.recent_first(np.zeros((50, 3), np.int64), "x.pkl", 1)


@pytest.mark.slow
def test_convert_joins_each_requests_sequence(recflow_download: Path, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    summary = recflow_convert.convert(recflow_download, out)
    assert sorted(summary["days"]) == ["day_00", "day_01", "day_02", "day_03"]
    assert summary["days"]["day_00"]["date"] == "2024-01-13"
    assert json.loads((out / "days.json").read_text()) == summary
    simulated = pd.read_parquet(recflow_download.parent / "recflow_simulated" / "day_01")
    converted = pd.read_parquet(out / "day_01")
    assert len(converted) == len(simulated) == summary["days"]["day_01"]["rows"]
    for name in features.SEQUENCE_FEATURES:  # the simulator's own sequences, recent first
        assert [list(v) for v in converted[name]] == [list(v) for v in simulated[name]], name
    assert summary["days"]["day_01"]["requests_without_sequence"] == 0
    assert converted["upload_timestamp"].max() < 10**10  # RecFlow's units kept (seconds)
    with pytest.raises(recflow_convert.ConversionError, match="not empty"):
        recflow_convert.convert(recflow_download, out)


@pytest.mark.slow
def test_convert_fails_on_sequences_of_another_day(recflow_download: Path, tmp_path: Path) -> None:
    download = tmp_path / "mixed"
    (download / "all_stage").mkdir(parents=True)
    (download / "seq_effective_50_dict").mkdir()
    day0, day1 = "2024-01-13", "2024-01-14"
    (download / "all_stage" / f"{day0}.feather").write_bytes(
        (recflow_download / "all_stage" / f"{day0}.feather").read_bytes()
    )
    (download / "seq_effective_50_dict" / f"{day0}.pkl").write_bytes(
        (recflow_download / "seq_effective_50_dict" / f"{day1}.pkl").read_bytes()
    )
    with pytest.raises(recflow_convert.ConversionError, match="same date"):
        recflow_convert.convert(download, tmp_path / "out")
    (download / "seq_effective_50_dict" / f"{day0}.pkl").unlink()
    with pytest.raises(recflow_convert.ConversionError, match="no behaviour sequences"):
        recflow_convert.convert(download, tmp_path / "out2")


def test_convert_refuses_a_malicious_sequence_pickle(logs, tmp_path: Path) -> None:
    import pyarrow.feather as feather

    download = tmp_path / "evil"
    (download / "all_stage").mkdir(parents=True)
    (download / "seq_effective_50_dict").mkdir()
    frame = logs.make_log(1).drop(columns=list(features.SEQUENCE_FEATURES))
    feather.write_feather(frame, str(download / "all_stage" / "2024-01-13.feather"))
    marker = tmp_path / "pwned"
    with open(download / "seq_effective_50_dict" / "2024-01-13.pkl", "wb") as f:
        pickle.dump({0: _RunsCode(marker)}, f)
    from pipeline.cli import main

    assert main(["convert-recflow", str(download), str(tmp_path / "out")]) == 2  # no flag
    code = main(["convert-recflow", "--allow-pickle", str(download), str(tmp_path / "out")])
    assert code == 1
    assert not marker.exists()
