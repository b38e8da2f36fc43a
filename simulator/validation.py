"""Reference rules for a valid log row, as the simulator writes them.

A row (a dict of Python values: int, float, list[int], or None for a null) is valid when every
rule holds; :func:`row_errors` returns one reason per broken rule. Every row the simulator's
corruption damages breaks at least one rule; valid rows break none. Duplicates are valid rows
whose ``(request_id, video_id)`` key was already seen (:func:`row_key`).

Rules:

1. No column is null; ints are ints, ``playing_time`` a finite float >= 0, lists lists of ints.
2. Ids (``*_id``, categories, upload_type, age, gender, province, duration, sequence elements)
   are >= 0.
3. Flags (stage flags and binary feedback) are 0 or 1; exactly one of rank_pos, rank_neg,
   coarse_neg, prerank_neg is 1.
4. ``rank_index`` is 0..R-1 for rank_pos, >= R for rank_neg, -1 otherwise (R: the simulator's
   ``rerank_candidates``, 10 by default); ``rerank_index`` is >= 0 for rank_pos and -1
   otherwise; a rank_pos item is exactly one of rerank_pos and rerank_neg, other items neither;
   realshow implies rerank_pos.
   (These are the simulator's conventions; RecFlow's own logs may need rule 4 relaxed.)
5. ``MIN_TIMESTAMP_MS <= request_timestamp < MAX_TIMESTAMP_MS`` and
   ``0 <= upload_timestamp <= request_timestamp``.
6. The three sequence columns have equal length <= SEQ_LEN.

CSV fields are parsed with :func:`parse_csv_row` first; a field that does not parse is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models.features import GROUP_SIZE, LOG_COLUMNS, SEQ_LEN, STAGE_CODES, STAGE_FLAG_COLUMNS

MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01 00:00 UTC
MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01 00:00 UTC
BINARY_COLUMNS: tuple[str, ...] = (
    *STAGE_FLAG_COLUMNS,
    "effective_view",
    "long_view",
    "like",
    "follow",
    "forward",
    "comment",
)
NON_NEGATIVE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "user_id",
    "device_id",
    "age",
    "gender",
    "province",
    "video_id",
    "author_id",
    "category_level_one",
    "category_level_two",
    "upload_type",
    "duration",
)
SEQ_COLUMNS = tuple(n for n, t in LOG_COLUMNS.items() if t == "int_list")


def row_key(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """Identity of a row within the log: a second row with the same key is a duplicate."""
    return row.get("request_id"), row.get("video_id")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def row_errors(row: Mapping[str, Any], rerank_candidates: int = GROUP_SIZE) -> list[str]:
    """Reasons why ``row`` is malformed (empty when it is valid); each names the field.

    ``rerank_candidates``: the simulator's setting the log was written with (how many items
    are ``rank_pos``).
    """
    errors = []
    for name, kind in LOG_COLUMNS.items():
        value = row.get(name)
        if value is None:
            errors.append(f"{name}: null")
        elif kind == "int" and not _is_int(value):
            errors.append(f"{name}: not an int ({value!r})")
        elif kind == "float" and not (
            isinstance(value, int | float) and math.isfinite(value) and value >= 0
        ):
            errors.append(f"{name}: not a finite number >= 0 ({value!r})")
        elif kind == "int_list":
            if not isinstance(value, list) or not all(_is_int(v) for v in value):
                errors.append(f"{name}: not a list of ints")
            elif any(v < 0 for v in value):
                errors.append(f"{name}: negative id in sequence")
            elif len(value) > SEQ_LEN:
                errors.append(f"{name}: longer than {SEQ_LEN}")
    if errors:
        return errors  # the remaining rules assume well-typed values
    for name in NON_NEGATIVE_COLUMNS:
        if row[name] < 0:
            errors.append(f"{name}: negative ({row[name]})")
    for name in BINARY_COLUMNS:
        if row[name] not in (0, 1):
            errors.append(f"{name}: not 0/1 ({row[name]})")
    groups = [g for g in STAGE_CODES if row[g] == 1]
    if len(groups) != 1:
        errors.append(f"stage flags: {len(groups)} of {list(STAGE_CODES)} set, need exactly 1")
    else:
        rank_index, group = row["rank_index"], groups[0]
        expected = {
            "rank_pos": 0 <= rank_index < rerank_candidates,
            "rank_neg": rank_index >= rerank_candidates,
        }.get(group, rank_index == -1)
        if not expected:
            errors.append(f"rank_index: {rank_index} inconsistent with {group}")
        if (row["rerank_index"] >= 0) != (group == "rank_pos") or row["rerank_index"] < -1:
            errors.append(f"rerank_index: {row['rerank_index']} inconsistent with {group}")
        if row["rerank_pos"] + row["rerank_neg"] != (group == "rank_pos"):
            errors.append(
                f"rerank_pos/rerank_neg: {row['rerank_pos']}/{row['rerank_neg']} on a {group} item"
            )
        if row["realshow"] == 1 and row["rerank_pos"] != 1:
            errors.append(f"realshow: set on a {group} item that is not rerank_pos")
    request_ts, upload_ts = row["request_timestamp"], row["upload_timestamp"]
    if not MIN_TIMESTAMP_MS <= request_ts < MAX_TIMESTAMP_MS:
        errors.append(f"request_timestamp: {request_ts} outside [2000, 2100)")
    if not 0 <= upload_ts <= request_ts:
        errors.append(f"upload_timestamp: {upload_ts} not in [0, request_timestamp]")
    if len({len(row[name]) for name in SEQ_COLUMNS}) != 1:
        errors.append("seq_*: sequence columns differ in length")
    return errors


def parse_csv_row(fields: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parses one CSV row (column -> field text) into Python values.

    An empty scalar field is a null, an empty list field an empty list; list fields are
    space-separated ints.

    Returns:
      (row with None where a field is null or unparseable, parse errors naming the field).
    """
    row: dict[str, Any] = {}
    errors = []
    for name, kind in LOG_COLUMNS.items():
        text = fields.get(name)
        if text is None:
            row[name] = None
            errors.append(f"{name}: missing column")
            continue
        try:
            if kind == "int_list":
                row[name] = [int(v) for v in text.split()]
            elif text == "":
                row[name] = None
            else:
                row[name] = int(text) if kind == "int" else float(text)
        except ValueError:
            row[name] = None
            errors.append(f"{name}: unparseable {kind} ({text!r})")
    return row, errors
