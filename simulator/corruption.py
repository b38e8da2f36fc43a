"""Malformed and duplicated rows for testing the ingestion's dead-letter path.

Corruption only ADDS rows: each extra row is a copy of a random valid row of the same chunk,
damaged in one way (or left intact for ``duplicate``), inserted at a random position. So the valid
rows (and every request built from them) are the same as with ``corrupt_fraction=0``, and the
number of extra rows is about ``fraction / (1 - fraction)`` times the valid rows, i.e. a share
``fraction`` of all rows written.

Kinds (each row is detectable by :func:`simulator.validation.row_errors`, except ``duplicate``
which is an exact copy of a valid row, detected by its (request_id, video_id) key):

- ``null_field``: one column is null (Parquet: any column; CSV: a scalar column, an empty field).
- ``nan_value``: ``playing_time`` is NaN (CSV: or an id column reads ``nan``).
- ``negative_id``: an id column, or one element of a behaviour-sequence column, is negative.
- ``timestamp_out_of_range``: the upload is after the request, or a timestamp is negative or
  outside [2000-01-01, 2100-01-01).
- ``contradictory_flags``: two of rank_pos/rank_neg/coarse_neg/prerank_neg are set, or none.
- ``duplicate``: an exact copy of a valid row, written after it.
- ``unparseable`` (CSV only): an int column holds text such as ``abc``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from models.features import LOG_COLUMNS, STAGE_CODES
from simulator.validation import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

KINDS: tuple[str, ...] = (
    "null_field",
    "nan_value",
    "negative_id",
    "timestamp_out_of_range",
    "contradictory_flags",
    "duplicate",
)
CSV_ONLY_KINDS: tuple[str, ...] = ("unparseable",)
ID_COLUMNS: tuple[str, ...] = (
    "request_id",
    "user_id",
    "device_id",
    "video_id",
    "author_id",
    "category_level_one",
    "category_level_two",
)
SEQ_COLUMNS = tuple(n for n, t in LOG_COLUMNS.items() if t == "int_list")
SCALAR_COLUMNS = tuple(n for n, t in LOG_COLUMNS.items() if t != "int_list")
INT_COLUMNS = tuple(n for n, t in LOG_COLUMNS.items() if t == "int")
_HOUR_MS = 3_600_000


def kinds_for(fmt: str) -> tuple[str, ...]:
    """Corruption kinds written for an output format."""
    return KINDS + (CSV_ONLY_KINDS if fmt == "csv" else ())


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _damage(row: dict[str, Any], kind: str, fmt: str, rng: np.random.Generator) -> None:
    """Damages ``row`` in place so that it is malformed in the way ``kind`` names."""
    if kind == "null_field":
        row[_pick(rng, SCALAR_COLUMNS if fmt == "csv" else tuple(LOG_COLUMNS))] = None
    elif kind == "nan_value":
        column = "playing_time" if fmt == "parquet" else _pick(rng, ("playing_time", *ID_COLUMNS))
        row[column] = float("nan")
    elif kind == "negative_id":
        options = [*ID_COLUMNS, *(c for c in SEQ_COLUMNS if row[c])]
        column = _pick(rng, options)
        value = -int(rng.integers(1, 1000))
        if column in SEQ_COLUMNS:
            row[column] = list(row[column])
            row[column][int(rng.integers(0, len(row[column])))] = value
        else:
            row[column] = value
    elif kind == "timestamp_out_of_range":
        variant = int(rng.integers(0, 4))
        if variant == 0:  # uploaded after the request
            row["upload_timestamp"] = row["request_timestamp"] + int(
                rng.integers(_HOUR_MS, 30 * 24 * _HOUR_MS)
            )
        elif variant == 1:  # request before 2000
            row["request_timestamp"] = int(rng.integers(0, MIN_TIMESTAMP_MS))
        elif variant == 2:  # request after 2100
            row["request_timestamp"] = MAX_TIMESTAMP_MS + int(rng.integers(0, 10**12))
        else:  # negative upload time
            row["upload_timestamp"] = -int(rng.integers(1, 10**12))
    elif kind == "contradictory_flags":
        own = next(g for g in STAGE_CODES if row[g] == 1)
        if rng.random() < 0.5:
            row[_pick(rng, [g for g in STAGE_CODES if g != own])] = 1
        else:
            row[own] = 0
    elif kind == "unparseable":
        row[_pick(rng, INT_COLUMNS)] = _pick(rng, ("abc", "12x", "1.2.3", "--"))
    elif kind != "duplicate":
        raise ValueError(f"unknown corruption kind {kind!r}")


def corrupt(
    clean: pa.Table, fraction: float, fmt: str, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], np.ndarray, Counter[str]]:
    """Draws the extra (malformed or duplicate) rows of one chunk.

    Args:
      clean: the chunk's valid rows.
      fraction: target share of extra rows among all rows written.
      fmt: "parquet" or "csv" (CSV also gets ``unparseable`` rows, and nulls only in scalars).
      rng: the chunk's corruption stream.

    Returns:
      (extra rows as dicts, write order over clean + extra rows, count per kind).
    """
    n = clean.num_rows
    expected = fraction / (1.0 - fraction) * n if fraction > 0 else 0.0
    n_extra = int(np.floor(expected + rng.random())) if expected > 0 else 0
    if n_extra == 0:
        return [], np.arange(n), Counter()
    kinds = kinds_for(fmt)
    sources = np.sort(rng.integers(0, n, n_extra))
    rows = clean.take(pa.array(sources)).to_pylist()
    counts: Counter[str] = Counter()
    # Extra row j goes just before clean row positions[j]; a duplicate after its original, so
    # the first occurrence of a key is always the valid row.
    positions = rng.integers(0, n + 1, n_extra)
    for j, row in enumerate(rows):
        kind = _pick(rng, kinds)
        _damage(row, kind, fmt, rng)
        counts[kind] += 1
        if kind == "duplicate":
            positions[j] = rng.integers(sources[j] + 1, n + 1)
    keys = np.concatenate([np.arange(n, dtype=np.float64), positions - 0.5])
    return rows, np.argsort(keys, kind="stable"), counts
