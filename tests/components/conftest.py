"""Hand-built RecFlow-schema logs with known contents, for exact-value ingestion tests.

Tests get the builders through the ``logs`` fixture (``logs.make_log(...)``,
``logs.write_log(...)``, ``logs.video_id(...)``): conftest modules are not importable under
``--import-mode=importlib``.
"""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from models import features

DAY_MS = 86_400_000
BASE_TS = 1_700_000_000_000  # 2023-11-14, inside the default valid range
GROUP_COUNTS = {"rank_pos": 12, "rank_neg": 3, "coarse_neg": 2, "prerank_neg": 1}


def video_id(request: int, group: str, j: int) -> int:
    """Unique per request; encodes the group so tests can read a candidate's truth off its id."""
    return request * 1000 + features.STAGE_CODES[group] * 100 + j


def make_log(
    requests: int = 3, day: int = 0, first_request: int = 0, group_counts=None
) -> pd.DataFrame:
    """One day of log rows: per request ``group_counts`` rows per stage group.

    rank_pos rows are written in reverse rank order (file order must not decide the list
    order); the three best rank_pos items are exposed and the best one effectively viewed;
    many fields are 0 (gender, age, province...) to catch dropped zeros.
    """
    group_counts = group_counts or GROUP_COUNTS
    out = []
    for r in range(first_request, first_request + requests):
        user = r % 2
        seq = [7 + r, 5, 3][: 1 + r % 3]
        for group, count in group_counts.items():
            for j in reversed(range(count)):
                ranked = group in ("rank_pos", "rank_neg")
                rank_index = j if group == "rank_pos" else 10 + j if ranked else -1
                exposed = group == "rank_pos" and j < 3
                row = dict.fromkeys(features.LOG_COLUMNS, 0)
                row.update(
                    request_id=r,
                    request_timestamp=BASE_TS + day * DAY_MS + r * 1000,
                    user_id=user,
                    device_id=10 + user,
                    age=user,
                    gender=0,
                    province=r % 3,
                    video_id=video_id(r, group, j),
                    author_id=j % 4,
                    category_level_one=j % 2,
                    category_level_two=j % 5,
                    upload_type=0,
                    upload_timestamp=BASE_TS - 3_600_000 * (j + 1),
                    duration=30 + j,
                    rank_index=rank_index,
                    rerank_index=j if exposed else -1,
                    realshow=int(exposed),
                    rerank_pos=int(exposed),
                    playing_time=2.5 * exposed,
                    effective_view=int(exposed and j == 0),
                    seq_video_id=seq,
                    seq_author_id=[v % 4 for v in seq],
                    seq_category_level_two=[v % 5 for v in seq],
                )
                row[group] = 1
                out.append(row)
    return pd.DataFrame(out, columns=list(features.LOG_COLUMNS))


def write_log(frame: pd.DataFrame, path: Path, fmt: str = "parquet") -> Path:
    """Writes ``frame`` the way the simulator does (CSV list columns as space-separated ints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        text = frame.copy()
        for name in ("seq_video_id", "seq_author_id", "seq_category_level_two"):
            text[name] = text[name].map(lambda v: " ".join(str(x) for x in v))
        text.to_csv(path, index=False)
    elif fmt == "feather":  # RecFlow's all_stage files: no behaviour sequence
        seq = ["seq_video_id", "seq_author_id", "seq_category_level_two"]
        feather.write_feather(
            pa.Table.from_pandas(frame.drop(columns=seq), preserve_index=False), str(path)
        )
    else:
        raise ValueError(fmt)
    return path


@pytest.fixture
def logs() -> types.SimpleNamespace:
    """The log builders of this module."""
    return types.SimpleNamespace(
        make_log=make_log,
        write_log=write_log,
        video_id=video_id,
        BASE_TS=BASE_TS,
        DAY_MS=DAY_MS,
        GROUP_COUNTS=GROUP_COUNTS,
    )


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Three clean days of three requests each, Parquet, in the simulator's layout."""
    base = tmp_path / "logs"
    for day in range(3):
        write_log(
            make_log(3, day, first_request=100 * day), base / f"day_{day:02d}" / "part-0.parquet"
        )
    return base
