"""Runs the simulator: world -> cascade per request -> daily log files and a manifest.

Random streams are derived from ``(seed, purpose, day, batch)``, so the output is a pure function
of (config, seed, requests_per_day, format, corrupt_fraction), the first days of a longer run equal
a shorter run's, and the clean rows do not depend on ``corrupt_fraction`` (corruption draws from
its own stream and only adds rows).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from models.features import LOG_COLUMNS, STAGE_CODES
from simulator import corruption
from simulator.cascade import CascadeBatch, run_cascade
from simulator.config import SimulatorConfig
from simulator.sequences import BehaviourHistory
from simulator.world import World
from simulator.writer import ARROW_SCHEMA, FORMATS, DayWriter, list_column

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
BATCH_REQUESTS = 1000  # requests per cascade batch and per Parquet row group
_MS_PER_DAY = 86_400_000
# Random stream purposes.
_WORLD, _DAY, _BATCH, _CORRUPT = 0, 1, 2, 3
_GROUP_FLAGS = {code: name for name, code in STAGE_CODES.items()}


def day_dir_name(day: int, days: int) -> str:
    """``day_00`` .. ``day_99`` (three digits when there are more than 100 days)."""
    return f"day_{day:0{3 if days > 99 else 2}d}"


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _initial_histories(world: World, rng: np.random.Generator) -> list[list[int]]:
    """Day-0 users' past effective views: their noisy favourites among a random pool."""
    c = world.config
    if c.initial_history_max == 0:
        return [[] for _ in range(world.num_users)]
    from simulator.cascade import _sample_pool  # same pool sampler as the cascade

    histories: list[list[int]] = []
    lengths = rng.integers(0, c.initial_history_max + 1, world.num_users)
    for start in range(0, world.num_users, BATCH_REQUESTS):
        users = np.arange(start, min(start + BATCH_REQUESTS, world.num_users))
        now = np.full(len(users), c.start_timestamp_ms, np.int64)
        pool = _sample_pool(world, users, now, rng)
        keys = world.affinity(users, pool, now) + rng.logistic(size=pool.shape)
        best = np.take_along_axis(pool, np.argsort(-keys, axis=1), axis=1)
        histories.extend(best[i, : lengths[u]].tolist() for i, u in enumerate(users))
    return histories


def _clean_table(
    world: World,
    batch: CascadeBatch,
    request_id: np.ndarray,
    now_ms: np.ndarray,
    users: np.ndarray,
    seq_offsets: np.ndarray,
    seq_videos: np.ndarray,
) -> pa.Table:
    r = batch.row_request
    video = batch.video
    user = users[r]
    group_flags = {
        name: (batch.group == code).astype(np.int64) for code, name in _GROUP_FLAGS.items()
    }
    columns: dict[str, Any] = {
        "request_id": request_id[r],
        "request_timestamp": now_ms[r],
        "user_id": user,
        "device_id": world.device_id[user],
        "age": world.age[user],
        "gender": world.gender[user],
        "province": world.province[user],
        "video_id": video,
        "author_id": world.author[video],
        "category_level_one": world.category_one[video],
        "category_level_two": world.category_two[video],
        "upload_type": world.upload_type[video],
        "upload_timestamp": world.upload_timestamp[video],
        "duration": world.duration[video],
        "realshow": batch.realshow,
        "rerank_pos": batch.rerank_pos,
        "rerank_neg": batch.rerank_neg,
        **group_flags,
        "rank_index": batch.rank_index,
        "rerank_index": batch.rerank_index,
        "playing_time": batch.playing_time,
        "effective_view": batch.effective_view,
        "long_view": batch.long_view,
        "like": batch.like,
        "follow": batch.follow,
        "forward": batch.forward,
        "comment": batch.comment,
        "seq_video_id": list_column(r, seq_offsets, seq_videos),
        "seq_author_id": list_column(r, seq_offsets, world.author[seq_videos]),
        "seq_category_level_two": list_column(r, seq_offsets, world.category_two[seq_videos]),
    }
    return pa.table([columns[name] for name in LOG_COLUMNS], schema=ARROW_SCHEMA)


def simulate(
    config: SimulatorConfig,
    out_dir: str | Path,
    *,
    days: int,
    requests_per_day: int,
    seed: int,
    fmt: str = "parquet",
    corrupt_fraction: float = 0.0,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes ``days`` daily log files in RecFlow's schema and ``manifest.json``.

    Args:
      config: the world, cascade and feedback knobs.
      out_dir: output folder; gets ``day_XX/part-00000.<fmt>`` per day and ``manifest.json``.
      days: number of days (>= 1).
      requests_per_day: requests per day (>= 1).
      seed: random seed; equal arguments give equal files.
      fmt: "parquet" or "csv".
      corrupt_fraction: share of written rows that are malformed or duplicated (in [0, 0.5]).
      progress: show a tqdm progress bar over requests.
      overwrite: replace an existing simulator output in ``out_dir`` (else it is an error).

    Returns:
      The manifest (also written to ``out_dir/manifest.json``).
    """
    if days < 1 or requests_per_day < 1:
        raise ValueError(f"days and requests_per_day must be >= 1, got {days}, {requests_per_day}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not 0.0 <= corrupt_fraction <= 0.5:
        raise ValueError(f"corrupt_fraction must be in [0, 0.5], got {corrupt_fraction}")
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)

    world = World.create(config, _rng(seed, _WORLD))
    history = BehaviourHistory(config.seq_len)
    history.add_users(_initial_histories(world, _rng(seed, _WORLD, 1)))
    salt = int(_rng(seed, _WORLD, 2).integers(0, 2**62))
    kinds = corruption.kinds_for(fmt)

    per_day = []
    bar = tqdm(total=days * requests_per_day, unit="req", disable=not progress, desc="simulate")
    for day in range(days):
        day_rng = _rng(seed, _DAY, day)
        new_users, new_items = world.start_day(day, day_rng)
        history.add_users([[] for _ in range(new_users)])
        day_start = config.start_timestamp_ms + day * _MS_PER_DAY
        users = day_rng.choice(
            world.num_users, requests_per_day, p=world.activity / world.activity.sum()
        )
        now_ms = np.sort(day_rng.integers(day_start, day_start + _MS_PER_DAY, requests_per_day))
        request_id = 1 + day * requests_per_day + np.arange(requests_per_day, dtype=np.int64)

        name = day_dir_name(day, days)
        writer = DayWriter(out / name, fmt)
        rows = 0
        by_kind: Counter[str] = Counter({k: 0 for k in kinds})
        for b, start in enumerate(range(0, requests_per_day, BATCH_REQUESTS)):
            part = slice(start, min(start + BATCH_REQUESTS, requests_per_day))
            # The loyalty term reads the histories as they stand at the batch's start (a user's
            # earlier request in the same batch is not yet in them; the logged sequence is).
            counts = world.author_counts(history.recent(users[part]))
            batch = run_cascade(
                world, users[part], now_ms[part], _rng(seed, _BATCH, day, b), salt, counts
            )
            offsets, seq = history.snapshot_and_update(
                users[part], batch.feed_videos, batch.feed_effective_view
            )
            clean = _clean_table(
                world, batch, request_id[part], now_ms[part], users[part], offsets, seq
            )
            extra, order, counts = corruption.corrupt(
                clean, corrupt_fraction, fmt, _rng(seed, _CORRUPT, day, b)
            )
            writer.write(clean, extra, order)
            rows += len(order)
            by_kind.update(counts)
            bar.update(part.stop - part.start)
        writer.close()
        corrupt_rows = sum(by_kind.values())
        per_day.append(
            {
                "day": day,
                "path": f"{name}/{writer.path.name}",
                "rows": rows,
                "valid_rows": rows - corrupt_rows,
                "requests": requests_per_day,
                "corrupt_rows": corrupt_rows,
                "corrupt_rows_by_kind": dict(sorted(by_kind.items())),
                "duplicate_rows": by_kind.get("duplicate", 0),
                "start_timestamp_ms": day_start,
                "end_timestamp_ms": day_start + _MS_PER_DAY,
                "first_request_id": int(request_id[0]),
                "new_users": new_users,
                "new_videos": new_items,
            }
        )
    bar.close()

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "days": days,
        "requests_per_day": requests_per_day,
        "format": fmt,
        "corrupt_fraction": corrupt_fraction,
        "columns": {f.name: str(f.type) for f in ARROW_SCHEMA},
        "config": config.to_dict(),
        "per_day": per_day,
        "rows": sum(d["rows"] for d in per_day),
        "valid_rows": sum(d["valid_rows"] for d in per_day),
        "requests": days * requests_per_day,
        "corrupt_rows": sum(d["corrupt_rows"] for d in per_day),
        "duplicate_rows": sum(d["duplicate_rows"] for d in per_day),
    }
    with open(out / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    previous = [*out.glob("day_*"), *out.glob(MANIFEST)] if out.exists() else []
    if previous and not overwrite:
        raise FileExistsError(
            f"{out} already holds simulator output ({previous[0].name}); pass overwrite=True "
            "(--overwrite) or choose an empty folder"
        )
    for path in previous:
        if path.is_dir():
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def simulate_once(
    config: SimulatorConfig,
    out_dir: str | Path,
    *,
    days: int,
    requests_per_day: int,
    seed: int,
    fmt: str = "parquet",
    corrupt_fraction: float = 0.0,
    progress: bool = False,
) -> tuple[dict[str, Any], bool]:
    """``simulate`` unless ``out_dir`` already holds a log written with these very arguments.

    The simulator is deterministic, so a manifest recording the same schema version, seed, sizes,
    format, corruption and ``config`` stands for the same files; anything else is re-simulated
    (the old output replaced).

    Returns:
      (the manifest, whether it was written now).
    """
    wanted = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "days": days,
        "requests_per_day": requests_per_day,
        "format": fmt,
        "corrupt_fraction": corrupt_fraction,
        "config": config.to_dict(),
    }
    wanted = json.loads(json.dumps(wanted))  # compare as the manifest stores it (lists, not tuples)
    path = Path(out_dir) / "manifest.json"
    if path.exists():
        written = json.loads(path.read_text())
        if all(written.get(key) == value for key, value in wanted.items()):
            return written, False
    manifest = simulate(
        config,
        out_dir,
        days=days,
        requests_per_day=requests_per_day,
        seed=seed,
        fmt=fmt,
        corrupt_fraction=corrupt_fraction,
        progress=progress,
        overwrite=True,
    )
    return manifest, True
