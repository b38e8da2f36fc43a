"""Which days a scheduled run trains and evaluates on (continuous training over daily logs).

Light on purpose (no TFX, no Beam): the Airflow DAG file imports it at parse time.
"""

from __future__ import annotations

import glob
import re
import string
from pathlib import Path

DEFAULT_DAY_PATTERN = "day_{day:02d}/*"  # the simulator's layout (see recflow_example_gen.splits)


def _pattern_regex(day_pattern: str) -> re.Pattern[str]:
    """A regex matching the paths ``day_pattern`` expands to, capturing the day number.

    ``"day_{day:02d}/*"`` -> ``day_(\\d+)/[^/]*``; glob ``*`` and ``?`` stay within one path part.
    """
    parts = []
    fields = 0
    for literal, field, _spec, _conv in string.Formatter().parse(day_pattern):
        for char in literal:
            parts.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        if field is not None:
            if field != "day":
                raise ValueError(f"day_pattern {day_pattern!r}: unknown field {{{field}}}")
            # Several {day} fields must agree: later ones refer back to the first group.
            parts.append(r"(?P<day>\d+)" if fields == 0 else r"(?P=day)")
            fields += 1
    if not fields:
        raise ValueError(f"day_pattern {day_pattern!r} has no {{day}} field")
    return re.compile("".join(parts))


def day_numbers(input_base: str | Path, day_pattern: str = DEFAULT_DAY_PATTERN) -> list[int]:
    """Days with at least one file under ``input_base`` matching ``day_pattern``, ascending.

    ``day_pattern`` is the pipeline's ``data.day_pattern`` (``"day_{day:02d}/*"`` for the
    simulator's folders, e.g. ``"all_stage/2024-01-{day:02d}.feather"`` for a RecFlow
    download): the same days the local runner's splits would read.
    """
    base = Path(input_base)
    if not base.is_dir():
        return []
    regex = _pattern_regex(day_pattern)
    # Every {day} field becomes "*" for the glob; the regex then keeps exact matches only.
    wildcard = re.sub(r"\{day[^}]*\}", "*", day_pattern)
    days = set()
    for path in glob.glob(str(base / wildcard)):
        relative = Path(path).relative_to(base).as_posix()
        name = Path(path).name
        if name.startswith((".", "_")):  # _SUCCESS, hidden files: never log data
            continue
        match = regex.fullmatch(relative)
        if match:
            days.add(int(match.group("day")))
    return sorted(days)


def newest_day_splits(days: list[int], window: int) -> tuple[list[int], list[int]]:
    """(train days, eval days): evaluate on the newest day, train on the ``window`` before it.

    The paper's streaming protocol: train on days up to t-1, test on day t.

    Raises:
      ValueError: fewer than two days of logs, or none in the window before the newest.
    """
    if len(days) < 2:
        raise ValueError(f"need at least two days of logs (train + eval), found {days}")
    newest = days[-1]
    train = [d for d in days[:-1] if d >= newest - window]
    if not train:
        raise ValueError(f"no day of logs within {window} days before day {newest}: {days}")
    return train, [newest]
