"""Arrow tables in RecFlow's schema, and one-file-per-day Parquet / CSV writers.

Parquet types: ``int`` columns int64, ``float`` float64, ``int_list`` list<int64>. Columns are
nullable in the schema (corrupted rows may hold nulls); clean rows never do. With
``corrupt_fraction`` > 0 the types stay the same: a NaN goes only into the float column
``playing_time``, and ids become negative or null rather than NaN, so pyarrow 10 reads every file
with the one schema :data:`ARROW_SCHEMA`.

CSV: a header row with the column names, then one row per line, comma-separated, no quoting;
ints in decimal, floats as Python's ``repr``, list columns as space-separated ints in one field
(an empty field is an empty list), an empty scalar field is a null.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.features import LOG_COLUMNS

_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "int_list": pa.list_(pa.int64())}
ARROW_SCHEMA = pa.schema([pa.field(n, _ARROW_TYPES[t]) for n, t in LOG_COLUMNS.items()])
FORMATS = ("parquet", "csv")


def list_column(
    row_request: np.ndarray, request_offsets: np.ndarray, request_values: np.ndarray
) -> pa.ListArray:
    """Repeats each request's list onto its rows.

    Args:
      row_request: [rows] request index of each row.
      request_offsets: [requests + 1] offsets into ``request_values``.
      request_values: concatenated per-request lists.

    Returns:
      list<int64> array with one entry per row.
    """
    lengths = np.diff(request_offsets)[row_request]
    offsets = np.zeros(len(row_request) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    starts = request_offsets[:-1][row_request]
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(request_values[index], pa.int64())
    )


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def csv_header() -> str:
    return ",".join(LOG_COLUMNS) + "\n"


def csv_lines(table: pa.Table) -> list[str]:
    """Renders a clean table (no nulls) as CSV lines (with trailing newlines)."""
    fields: list[list[str]] = []
    for name, kind in LOG_COLUMNS.items():
        column = table.column(name).combine_chunks()
        if kind == "int":
            fields.append(column.to_numpy().astype(str).tolist())
        elif kind == "float":
            fields.append([repr(v) for v in column.to_numpy().tolist()])
        else:
            values = column.values.to_numpy().astype(str).tolist()
            offsets = column.offsets.to_numpy().tolist()
            fields.append([" ".join(values[a:b]) for a, b in itertools.pairwise(offsets)])
    return [",".join(row) + "\n" for row in zip(*fields, strict=True)]


def csv_line(row: dict[str, Any]) -> str:
    """Renders one row given as Python values (None, NaN, str allowed: used for corrupt rows)."""
    return ",".join(_format_value(row[name]) for name in LOG_COLUMNS) + "\n"


class DayWriter:
    """Writes one day's rows to ``<day_dir>/part-00000.<fmt>`` chunk by chunk."""

    def __init__(self, day_dir: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        day_dir.mkdir(parents=True, exist_ok=True)
        self.path = day_dir / f"part-00000.{fmt}"
        self.fmt = fmt
        if fmt == "parquet":
            self._parquet = pq.ParquetWriter(self.path, ARROW_SCHEMA)
        else:
            self._csv = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._csv.write(csv_header())

    def write(self, clean: pa.Table, extra: Sequence[dict[str, Any]], order: np.ndarray) -> None:
        """Writes ``clean`` rows and ``extra`` rows interleaved in ``order``.

        Args:
          clean: the chunk's valid rows.
          extra: extra rows as Python dicts (corrupted or duplicated rows).
          order: permutation of ``range(len(clean) + len(extra))``; index i < len(clean) is clean
            row i, index len(clean) + j is extra row j.
        """
        if self.fmt == "parquet":
            if extra:
                table = pa.concat_tables([clean, pa.Table.from_pylist(list(extra), ARROW_SCHEMA)])
                table = table.take(pa.array(order))
            else:
                table = clean
            self._parquet.write_table(table)
        else:
            lines = csv_lines(clean) + [csv_line(row) for row in extra]
            self._csv.write("".join(lines[i] for i in order.tolist()))

    def close(self) -> None:
        if self.fmt == "parquet":
            self._parquet.close()
        else:
            self._csv.close()
