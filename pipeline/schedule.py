"""Which days a scheduled run trains and evaluates on (continuous training over daily logs)."""

from __future__ import annotations

from pathlib import Path


def day_numbers(input_base: str | Path) -> list[int]:
    """Day folders present under the input base (``day_00`` -> 0), ascending."""
    base = Path(input_base)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name[4:])
        for p in base.iterdir()
        if p.is_dir() and p.name.startswith("day_") and p.name[4:].isdigit()
    )


def newest_day_splits(days: list[int], window: int) -> tuple[list[int], list[int]]:
    """(train days, eval days): evaluate on the newest day, train on the ``window`` before it.

    The paper's streaming protocol: train on days up to t-1, test on day t.

    Raises:
      ValueError: fewer than two days of logs, or none in the window before the newest.
    """
    if len(days) < 2:
        raise ValueError(f"need at least two day folders (train + eval), found {days}")
    newest = days[-1]
    train = [d for d in days[:-1] if d >= newest - window]
    if not train:
        raise ValueError(f"no day of logs within {window} days before day {newest}: {days}")
    return train, [newest]
