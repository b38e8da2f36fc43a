"""Reading RecFlow-schema log files and validating their rows, one Arrow table at a time.

Logged data is untrusted input: every row is checked field by field and a malformed row becomes
a *dead letter* (the row plus a reason naming the field) instead of an exception or a silent
drop. A row's reason is its first failing check: checks 1-3 column by column in schema order,
then checks 4-6 in this order:

1. ``unparseable``: a CSV value that is not a number (or an id that is not an integer).
2. ``null`` / ``nan``: a missing value in a field (``rank_index`` / ``rerank_index`` may be
   missing with ``allow_missing_rank_index``; -1 means "no position" either way).
3. ``not_integral``: a float in an integer field (Parquet turns an int column with NaN into
   float64; 3.0 is accepted, 3.5 is not).
4. ``negative``: a negative id, count, duration or playing time (sequence elements too).
5. ``out_of_range``: a timestamp outside ``[min_timestamp_ms, max_timestamp_ms)``; an upload
   after the request; a stage or feedback flag not in {0, 1}.
6. ``contradictory_stage_flags``: not exactly one of the four stage groups set; an exposed
   (``realshow``) or reranked item flagged as dropped before the ranking stage's top; both
   ``rerank_pos`` and ``rerank_neg``; a ``rank_pos`` item without ``rank_index``.
   ``contradictory_sequence``: the three behaviour-sequence lists differ in length.

Checks that need the whole request (duplicates, context that disagrees between a request's
rows) run after grouping, in ``listwise.py``.

Files are read through Beam's ``FileSystems`` (local, gs://, s3://, hdfs://) and pyarrow:
Parquet by row group, Arrow IPC / feather by record batch, CSV as one unit with every column
read as text (so that an unparseable value is a per-row reason, not a failed file). Nothing is
ever unpickled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from models import features

FORMATS = ("parquet", "csv", "feather")

SCALAR_COLUMNS: tuple[str, ...] = tuple(
    c for c, t in features.LOG_COLUMNS.items() if t != "int_list"
)
LIST_COLUMNS: tuple[str, ...] = tuple(c for c, t in features.LOG_COLUMNS.items() if t == "int_list")
FLOAT_COLUMNS: tuple[str, ...] = tuple(c for c, t in features.LOG_COLUMNS.items() if t == "float")
INT_COLUMNS: tuple[str, ...] = tuple(c for c, t in features.LOG_COLUMNS.items() if t == "int")
# Positions: -1 (or, with ``allow_missing_rank_index``, null) when the stage gave none.
OPTIONAL_COLUMNS: tuple[str, ...] = ("rank_index", "rerank_index")
# Feedback flags (like the stage flags, 0 or 1).
BINARY_FEEDBACK_COLUMNS: tuple[str, ...] = tuple(
    c for c in features.FEEDBACK_COLUMNS if c != "playing_time"
)
TIMESTAMP_COLUMNS: tuple[str, ...] = ("request_timestamp", "upload_timestamp")
# Everything else that must be >= 0 (ids, counts, durations, feedback).
NON_NEGATIVE_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in SCALAR_COLUMNS
    if c not in OPTIONAL_COLUMNS
    and c not in TIMESTAMP_COLUMNS
    and c not in features.STAGE_FLAG_COLUMNS
)
GROUP_FLAGS: tuple[str, ...] = tuple(features.STAGE_CODES)  # prerank_neg .. rank_pos
DROPPED_BEFORE_TOP: tuple[str, ...] = ("rank_neg", "coarse_neg", "prerank_neg")

# CSV cells read as null; "nan" is reported as NaN, anything else non-numeric as unparseable.
CSV_NULL_VALUES = ("", "null", "NULL", "None", "NA")


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Bounds and tolerances of the row checks.

    Attributes:
      min_timestamp_ms: earliest valid request/upload time (2000-01-01 UTC), inclusive.
      max_timestamp_ms: latest valid request/upload time (2100-01-01 UTC), exclusive.
      max_upload_after_request_ms: how far an upload time may lie after the request time (clock
        skew); 0: an item cannot be uploaded after it was recommended.
      allow_missing_rank_index: accept null ``rank_index`` / ``rerank_index`` (read as "no
        position") on items the ranking stage did not keep; off by default, where -1 means
        "no position" and a null is malformed (the simulator's convention).
    """

    min_timestamp_ms: int = 946_684_800_000
    max_timestamp_ms: int = 4_102_444_800_000
    max_upload_after_request_ms: int = 0
    allow_missing_rank_index: bool = False


@dataclasses.dataclass
class ValidatedRows:
    """The valid rows of one read unit, as columns, plus the dead letters of the others.

    Attributes:
      source: the file the rows came from.
      row: [n] row index of each valid row within its file (its position, for determinism).
      columns: scalar column -> [n] int64 (float64 for ``playing_time``); missing optional
        values are ``PAD_ID``.
      sequences: list column -> [n, SEQ_LEN] int64, truncated and padded with ``PAD_ID``.
      dead_letters: one dict per malformed row (see ``dead_letter``).
      rows_read: rows in the unit, valid or not.
    """

    source: str
    row: np.ndarray
    columns: dict[str, np.ndarray]
    sequences: dict[str, np.ndarray]
    dead_letters: list[dict[str, Any]]
    rows_read: int


def dead_letter(
    source: str, row: int, kind: str, field: str, reason: str, record: dict[str, Any]
) -> dict[str, Any]:
    """One dead-letter record (a JSON line): where the row was, why, and the row itself."""
    return {
        "source": source,
        "row": int(row),
        "kind": kind,
        "field": field,
        "reason": reason,
        "record": {k: _json_safe(v) for k, v in record.items()},
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/inf are not JSON
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _json_safe(float(value))
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    return value


# --- reading ---------------------------------------------------------------------------------


def _open(path: str):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type="uncompressed")


def plan_units(path: str, fmt: str) -> list[tuple[str, int, int]]:
    """Splits a file into independently readable units: ``(path, unit, first_row)``.

    Parquet row groups and Arrow IPC record batches are read in parallel by Beam workers; a CSV
    file is one unit (write several part files for parallelism).
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path) as f:
            meta = pq.ParquetFile(f).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    elif fmt == "feather":
        sizes = _feather_batch_sizes(path)
    elif fmt == "csv":
        return [(path, 0, 0)]
    else:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if sizes else []
    return [(path, i, int(s)) for i, s in enumerate(starts)]


def _feather_batch_sizes(path: str) -> list[int]:
    import pyarrow.ipc as ipc

    with _open(path) as f:
        try:
            reader = ipc.open_file(pa.BufferReader(f.read()))
        except pa.ArrowInvalid:
            return [-1]  # feather v1: one unit, read whole
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


def count_units(path: str, fmt: str) -> int:
    """How many units ``plan_units`` makes of a file, from its footer only (for progress)."""
    if fmt == "csv":
        return 1
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path) as f:
            return pq.ParquetFile(f).metadata.num_row_groups
    if fmt == "feather":
        import pyarrow.ipc as ipc

        with _open(path) as f:
            try:
                return ipc.open_file(f).num_record_batches
            except pa.ArrowInvalid:
                return 1  # feather v1: one unit
    raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")


def read_unit(path: str, fmt: str, unit: int) -> pa.Table:
    """Reads one unit planned by ``plan_units`` as an Arrow table."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path) as f:
            return pq.ParquetFile(f).read_row_group(unit)
    if fmt == "feather":
        import pyarrow.feather as feather
        import pyarrow.ipc as ipc

        with _open(path) as f:
            buffer = pa.BufferReader(f.read())
        try:
            reader = ipc.open_file(buffer)
        except pa.ArrowInvalid:
            buffer.seek(0)
            return feather.read_table(buffer)
        return pa.Table.from_batches([reader.get_batch(unit)])
    if fmt == "csv":
        import pyarrow.csv as pa_csv

        with _open(path) as f:
            return pa_csv.read_csv(
                pa.BufferReader(f.read()),
                read_options=pa_csv.ReadOptions(autogenerate_column_names=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types=_all_text_types(path),
                    # Every cell stays text: "" is a null scalar but an empty sequence.
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
    raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")


def _all_text_types(path: str) -> dict[str, pa.DataType]:
    with _open(path) as f:
        first_line = f.readline().decode("utf-8").strip()
    return {name.strip('"'): pa.string() for name in first_line.split(",")}


# --- validation ------------------------------------------------------------------------------


class _Reasons:
    """First failing check per row: kind, field and message."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, dtype=bool)
        self.kind = np.empty(n, dtype=object)
        self.field = np.empty(n, dtype=object)
        self.message = np.empty(n, dtype=object)

    def flag(self, mask: np.ndarray, kind: str, field: str, message: str) -> None:
        new = np.asarray(mask, dtype=bool) & ~self.bad
        if new.any():
            self.bad |= new
            self.kind[new] = kind
            self.field[new] = field
            self.message[new] = message


def _parse_int_text(text: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses CSV cells as integers: (values, unparseable, nan)."""
    values = np.zeros(len(text), dtype=np.int64)
    unparseable = np.zeros(len(text), dtype=bool)
    nan = np.zeros(len(text), dtype=bool)
    for i, cell in enumerate(text):
        if cell is None:
            continue
        cell = cell.strip()
        try:
            values[i] = int(cell)
            continue
        except ValueError:
            pass
        try:
            number = float(cell)
        except ValueError:
            unparseable[i] = True
            continue
        if math.isnan(number):
            nan[i] = True
        elif not math.isfinite(number) or number != int(number):
            unparseable[i] = True
        else:
            values[i] = int(number)
    return values, unparseable, nan


def _scalar(
    table: pa.Table, name: str, reasons: _Reasons, optional: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One scalar column as numpy values and a 'missing' mask; flags malformed cells."""
    array = table.column(name).combine_chunks()
    n = len(array)
    null = array.is_null().to_numpy(zero_copy_only=False)
    is_float = name in FLOAT_COLUMNS
    dtype = np.float64 if is_float else np.int64
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        text = np.asarray(array.to_pylist(), dtype=object)
        null = null | np.isin(text, CSV_NULL_VALUES)
        text[null] = None
        if is_float:
            values = np.zeros(n, dtype=np.float64)
            unparseable = np.zeros(n, dtype=bool)
            for i, cell in enumerate(text):
                if cell is not None:
                    try:
                        values[i] = float(cell)
                    except ValueError:
                        unparseable[i] = True
            nan = np.isnan(values)
        else:
            values, unparseable, nan = _parse_int_text(text)
        reasons.flag(unparseable, "unparseable", name, f"unparseable value in field '{name}'")
        not_integral = np.zeros(n, dtype=bool)
    elif pa.types.is_floating(array.type):
        raw = array.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        nan = np.isnan(raw)
        finite = np.where(np.isfinite(raw), raw, 0.0)
        not_integral = ~is_float & (np.isinf(raw) | (finite != np.floor(finite)))
        values = finite if is_float else finite.astype(np.int64)
    elif pa.types.is_integer(array.type) or pa.types.is_boolean(array.type):
        values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
        nan = not_integral = np.zeros(n, dtype=bool)
    else:
        raise ValueError(f"column '{name}' has unsupported type {array.type}")
    missing = null | nan
    if not optional:
        reasons.flag(null, "null", name, f"null value in required field '{name}'")
        reasons.flag(nan, "nan", name, f"NaN in required field '{name}'")
    reasons.flag(not_integral, "not_integral", name, f"non-integer value in field '{name}'")
    return values.astype(dtype), missing


def _sequence(table: pa.Table, name: str, reasons: _Reasons) -> tuple[np.ndarray, np.ndarray]:
    """A list column as [n, SEQ_LEN] int64 padded with PAD_ID, and each row's list length."""
    n = table.num_rows
    if name not in table.column_names:  # RecFlow's all_stage files carry no sequence
        return np.full((n, features.SEQ_LEN), features.PAD_ID, np.int64), np.zeros(n, np.int64)
    array = table.column(name).combine_chunks()
    null = array.is_null().to_numpy(zero_copy_only=False)
    reasons.flag(null, "null", name, f"null value in required field '{name}'")
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        # CSV: space-separated integers.
        lists, bad = [], np.zeros(n, dtype=bool)
        for i, cell in enumerate(array.to_pylist()):
            try:
                lists.append([int(v) for v in (cell or "").split()])
            except ValueError:
                lists.append([])
                bad[i] = True
        reasons.flag(bad, "unparseable", name, f"unparseable value in field '{name}'")
        lengths = np.array([len(v) for v in lists], dtype=np.int64)
        flat = np.array([v for row in lists for v in row], dtype=np.int64)
        elem_null = np.zeros(len(flat), dtype=bool)
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        array = array.fill_null(pa.scalar([], type=array.type))
        lengths = np.diff(array.offsets.to_numpy()).astype(np.int64)
        flat_arrow = array.flatten()
        elem_null = flat_arrow.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_floating(flat_arrow.type):
            raw = flat_arrow.fill_null(0.0).to_numpy(zero_copy_only=False)
            elem_null = elem_null | np.isnan(raw)
            flat = np.nan_to_num(raw).astype(np.int64)
        else:
            flat = flat_arrow.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        raise ValueError(f"column '{name}' has unsupported type {array.type}")
    parent = np.repeat(np.arange(n), lengths)
    bad_null = np.zeros(n, dtype=bool)
    bad_null[parent[elem_null]] = True
    reasons.flag(bad_null, "null", name, f"null element in field '{name}'")
    bad_negative = np.zeros(n, dtype=bool)
    bad_negative[parent[flat < 0]] = True
    reasons.flag(bad_negative, "negative", name, f"negative id in field '{name}'")
    # Most recent first: keep the first SEQ_LEN of each list.
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    within = np.arange(len(flat)) - np.repeat(starts, lengths)
    keep = within < features.SEQ_LEN
    padded = np.full((n, features.SEQ_LEN), features.PAD_ID, np.int64)
    padded[parent[keep], within[keep]] = flat[keep]
    return padded, lengths


def validate_table(
    table: pa.Table, source: str, first_row: int, config: ValidationConfig
) -> ValidatedRows:
    """Validates every row of ``table``; returns the valid ones and dead letters for the rest.

    Raises:
      ValueError: a required column is missing from the file (the file, not a row, is wrong).
    """
    missing_columns = [c for c in SCALAR_COLUMNS if c not in table.column_names]
    if missing_columns:
        raise ValueError(f"{source}: missing column(s) {missing_columns}")
    n = table.num_rows
    reasons = _Reasons(n)
    columns: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    for name in SCALAR_COLUMNS:
        optional = config.allow_missing_rank_index and name in OPTIONAL_COLUMNS
        columns[name], missing[name] = _scalar(table, name, reasons, optional)
    sequences, lengths = {}, {}
    for name in LIST_COLUMNS:
        sequences[name], lengths[name] = _sequence(table, name, reasons)

    for name in NON_NEGATIVE_COLUMNS:
        reasons.flag(columns[name] < 0, "negative", name, f"negative value in field '{name}'")
    for name in TIMESTAMP_COLUMNS:
        outside = (columns[name] < config.min_timestamp_ms) | (
            columns[name] >= config.max_timestamp_ms
        )
        reasons.flag(
            outside,
            "out_of_range",
            name,
            f"field '{name}' outside [{config.min_timestamp_ms}, {config.max_timestamp_ms}) ms",
        )
    reasons.flag(
        columns["upload_timestamp"]
        > columns["request_timestamp"] + config.max_upload_after_request_ms,
        "out_of_range",
        "upload_timestamp",
        "field 'upload_timestamp' after the request's 'request_timestamp'",
    )
    for name in (*features.STAGE_FLAG_COLUMNS, *BINARY_FEEDBACK_COLUMNS):
        reasons.flag(
            (columns[name] != 0) & (columns[name] != 1),
            "out_of_range",
            name,
            f"flag '{name}' is not 0 or 1",
        )

    flags = {name: columns[name] == 1 for name in features.STAGE_FLAG_COLUMNS}
    group_count = sum(flags[g].astype(int) for g in GROUP_FLAGS)
    reasons.flag(
        group_count != 1,
        "contradictory_stage_flags",
        "stage",
        f"not exactly one of {list(GROUP_FLAGS)} set",
    )
    dropped = np.logical_or.reduce([flags[g] for g in DROPPED_BEFORE_TOP])
    for passed in ("realshow", "rerank_pos", "rerank_neg"):
        reasons.flag(
            flags[passed] & dropped,
            "contradictory_stage_flags",
            passed,
            f"'{passed}' set on an item dropped before the ranking stage's top",
        )
    reasons.flag(
        flags["rerank_pos"] & flags["rerank_neg"],
        "contradictory_stage_flags",
        "rerank_pos",
        "both 'rerank_pos' and 'rerank_neg' set",
    )
    reasons.flag(
        flags["rank_pos"] & (missing["rank_index"] | (columns["rank_index"] < 0)),
        "contradictory_stage_flags",
        "rank_index",
        "'rank_pos' item without a valid 'rank_index'",
    )
    seq_lengths = np.stack([lengths[c] for c in LIST_COLUMNS])
    reasons.flag(
        (seq_lengths != seq_lengths[0]).any(axis=0),
        "contradictory_sequence",
        LIST_COLUMNS[0],
        f"behaviour sequence lists {list(LIST_COLUMNS)} differ in length",
    )

    for name in OPTIONAL_COLUMNS:  # missing or negative: no position
        columns[name] = np.where(
            missing[name] | (columns[name] < 0), features.PAD_ID, columns[name]
        )

    bad_rows = np.flatnonzero(reasons.bad)
    letters = []
    if len(bad_rows):
        records = table.take(pa.array(bad_rows)).to_pylist()
        for i, record in zip(bad_rows, records, strict=False):
            letters.append(
                dead_letter(
                    source,
                    first_row + i,
                    reasons.kind[i],
                    reasons.field[i],
                    reasons.message[i],
                    record,
                )
            )
    good = ~reasons.bad
    return ValidatedRows(
        source=source,
        row=(np.arange(n, dtype=np.int64) + first_row)[good],
        columns={k: v[good] for k, v in columns.items()},
        sequences={k: v[good] for k, v in sequences.items()},
        dead_letters=letters,
        rows_read=n,
    )


def split_by_request(rows: ValidatedRows) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(request_id, chunk)``: the valid rows of one request in this unit.

    Grouping inside a unit first means Beam shuffles one element per request and unit, not one
    per row. A chunk is a few compact arrays (cheap to encode): ``ints`` [n, len(INT_COLUMNS)],
    ``floats`` [n, len(FLOAT_COLUMNS)], the distinct behaviour sequences ``seq``
    [u, len(LIST_COLUMNS), SEQ_LEN] (a request's rows normally share one) and ``seq_index`` [n],
    plus ``source`` and ``row`` (each row's position in the logs).
    """
    request_ids = rows.columns["request_id"]
    if not len(request_ids):
        return
    ints = np.stack([rows.columns[c] for c in INT_COLUMNS], axis=1)
    floats = np.stack([rows.columns[c] for c in FLOAT_COLUMNS], axis=1)
    seqs = np.stack([rows.sequences[c] for c in LIST_COLUMNS], axis=1)
    order = np.argsort(request_ids, kind="stable")
    boundaries = np.flatnonzero(np.diff(request_ids[order])) + 1
    for index in np.split(order, boundaries):
        block = seqs[index].reshape(len(index), -1)
        if (block == block[0]).all():  # the usual case: one sequence per request
            unique, inverse = block[:1], np.zeros(len(index), dtype=np.int64)
        else:
            unique, inverse = np.unique(block, axis=0, return_inverse=True)
        yield (
            int(request_ids[index[0]]),
            {
                "source": rows.source,
                "row": rows.row[index],
                "ints": ints[index],
                "floats": floats[index],
                "seq": unique.reshape(len(unique), len(LIST_COLUMNS), features.SEQ_LEN),
                "seq_index": inverse.reshape(-1),
            },
        )
