"""A RecFlow download -> our daily Parquet logs, with the behaviour sequences joined per request.

RecFlow (Liu et al., ICLR 2025) ships each day's all-stage samples as ``all_stage/DATE.feather``
(one row per request x video, our ``LOG_COLUMNS`` minus the sequences) and keeps the user's
behaviour sequence only in a pickled dict, ``seq_effective_50_dict/DATE.pkl``:

    request_id -> int64 [50, 10]: the user's last 50 effective views before the request,
    oldest first, valid rows right-aligned; column 7 is the view's request timestamp (> 0 when
    the row is valid); columns 0, 1, 2 are video_id, author_id, category_level_two.

``convert`` writes ``OUT/day_NN/part-00000.parquet`` (``day_00`` = the first date, in date
order) with every all-stage column unchanged (RecFlow's time units: ingest with
``preset="recflow"``) plus ``seq_video_id``, ``seq_author_id`` and ``seq_category_level_two``
as ``list<int64>``, most recent first, and ``OUT/days.json`` (day folder -> date, counts).
The pickles are read with ``safe_pickle`` (dicts, lists, ints and NumPy arrays only); RecFlow's
other pickles (``request_id_dict/``, ``others/``) are not read: the all-stage files hold every
candidate.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from components.recflow_example_gen import safe_pickle

ALL_STAGE_DIR = "all_stage"
SEQUENCE_DIR = "seq_effective_50_dict"
DAYS_FILE = "days.json"
# Columns of a sequence row (RecFlow's layout).
SEQ_COLUMNS = {"seq_video_id": 0, "seq_author_id": 1, "seq_category_level_two": 2}
SEQ_TIMESTAMP_COLUMN = 7
BATCH_ROWS = 262_144  # rows per Parquet row group (the ingestion reads row groups in parallel)


class ConversionError(ValueError):
    """The download is not in RecFlow's layout, or a day's sequences do not match its rows."""


def recent_first(sequence: np.ndarray, source: str, request_id: int) -> dict[str, np.ndarray]:
    """One request's sequence array as our three columns, most recent view first."""
    if sequence.ndim != 2 or sequence.shape[1] <= SEQ_TIMESTAMP_COLUMN:
        raise ConversionError(
            f"{source}: request {request_id}: expected an int array [n, >= 8], got shape"
            f" {sequence.shape}"
        )
    if sequence.dtype.kind not in "iu":
        raise ConversionError(f"{source}: request {request_id}: dtype {sequence.dtype} not int")
    rows = sequence[sequence[:, SEQ_TIMESTAMP_COLUMN] > 0][::-1]
    return {name: rows[:, col].astype(np.int64) for name, col in SEQ_COLUMNS.items()}


def _list_column(values: list[np.ndarray]) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate(values) if values else np.zeros(0, np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int64()))


def load_sequences(path: Path) -> dict[int, np.ndarray]:
    """``seq_effective_50_dict/DATE.pkl`` through the restricted unpickler."""
    with open(path, "rb") as f:
        loaded = safe_pickle.load(f, str(path))
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path}: expected a dict request_id -> array, got {type(loaded)}")
    return loaded


def convert_day(
    all_stage: Path, sequences: dict[Any, np.ndarray], out_file: Path
) -> dict[str, int]:
    """Writes one day's rows with the sequence columns; returns its counts."""
    table = feather.read_table(str(all_stage), memory_map=True)
    if "request_id" not in table.column_names:
        raise ConversionError(f"{all_stage}: no 'request_id' column")
    clash = sorted(set(SEQ_COLUMNS) & set(table.column_names))
    if clash:
        raise ConversionError(f"{all_stage}: already has sequence column(s) {clash}")
    lookup = {int(k): v for k, v in sequences.items()}
    per_request: dict[int, dict[str, np.ndarray] | None] = {}
    empty = {name: np.zeros(0, np.int64) for name in SEQ_COLUMNS}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            columns: dict[str, list[np.ndarray]] = {name: [] for name in SEQ_COLUMNS}
            for request_id in batch.column("request_id").to_numpy(zero_copy_only=False):
                request_id = int(request_id)
                if request_id not in per_request:
                    found = lookup.get(request_id)
                    per_request[request_id] = (
                        None
                        if found is None
                        else recent_first(np.asarray(found), str(all_stage), request_id)
                    )
                seq = per_request[request_id] or empty
                for name in SEQ_COLUMNS:
                    columns[name].append(seq[name])
            arrays = [*batch.columns, *(_list_column(columns[n]) for n in SEQ_COLUMNS)]
            names = [*batch.schema.names, *SEQ_COLUMNS]
            joined = pa.Table.from_arrays(arrays, names=names)
            if writer is None:
                writer = pq.ParquetWriter(str(out_file), joined.schema)
            writer.write_table(joined)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ConversionError(f"{all_stage}: no rows")
    missing = sum(1 for v in per_request.values() if v is None)
    return {
        "rows": table.num_rows,
        "requests": len(per_request),
        "requests_without_sequence": missing,
    }


def convert(
    download: str | Path,
    out: str | Path,
    dates: str = "*",
    max_missing_sequence_share: float = 0.01,
) -> dict[str, Any]:
    """Converts every date of ``download`` matching ``dates`` (a glob over the date stems).

    Raises:
      ConversionError: no all-stage file, a date without its sequence pickle, a non-empty
        output folder, or more than ``max_missing_sequence_share`` of a day's requests without
        a sequence (a download whose pickles do not belong to its feather files).
      safe_pickle.UnsafePickleError: a pickle names anything but dict/list/int/NumPy arrays.
    """
    download, out = Path(download), Path(out)
    files = sorted(
        p for p in (download / ALL_STAGE_DIR).glob("*.feather") if fnmatch.fnmatch(p.stem, dates)
    )
    if not files:
        raise ConversionError(
            f"no {ALL_STAGE_DIR}/<date>.feather matching {dates!r} under {download}"
        )
    if out.exists() and any(out.iterdir()):
        raise ConversionError(f"output folder {out} is not empty")
    days: dict[str, Any] = {}
    for number, all_stage in enumerate(files):
        pickled = download / SEQUENCE_DIR / f"{all_stage.stem}.pkl"
        if not pickled.exists():
            raise ConversionError(f"{all_stage}: no behaviour sequences at {pickled}")
        folder = f"day_{number:02d}"
        target = out / folder / "part-00000.parquet"
        counts = convert_day(all_stage, load_sequences(pickled), target)
        share = counts["requests_without_sequence"] / max(counts["requests"], 1)
        if share > max_missing_sequence_share:
            raise ConversionError(
                f"{pickled}: {counts['requests_without_sequence']:,} of {counts['requests']:,}"
                f" requests of {all_stage.name} ({share:.1%}) have no sequence (more than"
                f" {max_missing_sequence_share:.1%}): do the pickle and the feather file belong"
                " to the same date?"
            )
        days[folder] = {"date": all_stage.stem, "source": str(all_stage), **counts}
    summary = {"download": str(download), "days": days}
    (out / DAYS_FILE).write_text(json.dumps(summary, indent=2))
    return summary
