"""What the simulator knows and a log does not say: the true affinity at each request's time.

The replay (``experiments/replay.py``) scores what a served cascade returns for a logged request
against the world that produced the log. This module gives it that world and the requests:

- :func:`load_day` rebuilds the :class:`~simulator.world.World` as it was during one day of a
  log from the log's ``manifest.json`` alone (seed + ``SimulatorConfig``: the simulator is
  deterministic, and the world's evolution does not depend on what the cascade served), and
  reads the day's requests from the log's own rows: the request-time context a service would
  get (user, demographics, time, behaviour sequence) and what the production cascade showed.
- :meth:`ReplayDay.true_affinity` is ``World.affinity`` of a request's user against every video
  uploaded by the request's time (later uploads are not available yet: ``-inf``), with the
  loyalty term of the user's recent views as the logged behaviour sequence holds them at the
  request (the simulated cascade itself reads them once per batch of requests, so for a user with
  an earlier request in the same batch its affinity lags by that request's views; the replay
  uses the request's own sequence).

Nothing is written next to the log: training reads only the day folders, so the truth never
reaches training data. Rebuilding checks the log against the world (every logged video exists,
was uploaded before the request and has the world's features) and fails loudly on a log that the
manifest does not describe.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.features import GROUP_SIZE, PAD_ID, SEQ_LEN, SEQUENCE_FEATURES
from simulator.config import SimulatorConfig
from simulator.simulate import MANIFEST, world_on_day
from simulator.validation import parse_csv_row, row_errors, row_key
from simulator.world import World

CONTEXT_COLUMNS: tuple[str, ...] = (
    "request_id",
    "request_timestamp",
    "user_id",
    "device_id",
    "age",
    "gender",
    "province",
)
_ROW_COLUMNS = (*CONTEXT_COLUMNS, "video_id", "rank_pos", "rerank_index", "realshow")
_ITEM_COLUMNS = ("author_id", "category_level_two", "upload_timestamp", "duration")
_NEEDED = (*_ROW_COLUMNS, *_ITEM_COLUMNS, *SEQUENCE_FEATURES)


@dataclasses.dataclass(frozen=True)
class LoggedRequests:
    """A day's requests as logged, in time order (``R`` requests).

    Attributes:
      context: ``CONTEXT_COLUMNS`` -> int64 [R] (``request_id``, ``request_timestamp`` in ms, the
        user's ids and demographics).
      sequences: ``SEQUENCE_FEATURES`` -> int64 [R, SEQ_LEN], most recent first, ``PAD_ID`` after
        the end (as serving inputs are padded).
      sequence_length: int64 [R].
      production: int64 [R, GROUP_SIZE]: the production cascade's top items (re-ranking's top
        ``GROUP_SIZE`` of the ``rank_pos`` items) in re-ranking order, the feed it showed the
        first ``exposed`` of; ``PAD_ID`` if fewer.
      exposed: int64 [R]: how many items were shown (``realshow``).
      logged: int64 [R, max list]: every logged candidate (``PAD_ID`` after the end).
    """

    context: dict[str, np.ndarray]
    sequences: dict[str, np.ndarray]
    sequence_length: np.ndarray
    production: np.ndarray
    exposed: np.ndarray
    logged: np.ndarray

    def __len__(self) -> int:
        return len(self.context["request_id"])

    def sequence(self, name: str, row: int) -> list[int]:
        """Request ``row``'s sequence ``name`` without padding."""
        return self.sequences[name][row, : self.sequence_length[row]].tolist()

    def take(self, rows: np.ndarray) -> LoggedRequests:
        """The requests at ``rows`` (in that order)."""
        return LoggedRequests(
            context={k: v[rows] for k, v in self.context.items()},
            sequences={k: v[rows] for k, v in self.sequences.items()},
            sequence_length=self.sequence_length[rows],
            production=self.production[rows],
            exposed=self.exposed[rows],
            logged=self.logged[rows],
        )


@dataclasses.dataclass
class ReplayDay:
    """One day of a simulated log with its world: the requests and their ground truth."""

    world: World
    day: int
    requests: LoggedRequests
    manifest: dict[str, Any]

    def available(self) -> np.ndarray:
        """[R] int64: videos uploaded at or before each request (ids ``0 .. n - 1``: the world's
        videos are sorted by upload time, the rule the cascade's candidate pool follows)."""
        now = self.requests.context["request_timestamp"]
        return np.searchsorted(self.world.upload_timestamp, now, side="right").astype(np.int64)

    def true_affinity(self, rows: np.ndarray) -> np.ndarray:
        """``World.affinity`` of requests ``rows`` against every video: float64 [len(rows), V],
        ``-inf`` where a video is not uploaded yet at the request's time; the user's recent views
        are the request's logged behaviour sequence."""
        rows = np.asarray(rows, np.int64)
        ctx = self.requests.context
        users, now = ctx["user_id"][rows], ctx["request_timestamp"][rows]
        n = self.world.num_items
        items = np.broadcast_to(np.arange(n, dtype=np.int64), (len(rows), n))
        recent = [self.requests.sequence("seq_video_id", int(r)) for r in rows]
        affinity = self.world.affinity(users, items, now, self.world.author_counts(recent))
        available = self.available()[rows]
        return np.where(np.arange(n)[None, :] < available[:, None], affinity, -np.inf)


def read_manifest(log_dir: str | Path) -> dict[str, Any]:
    """The simulator's ``manifest.json`` of ``log_dir``; a clear error if there is none."""
    path = Path(log_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no simulator manifest; the replay needs a log written by `lcron simulate` "
            "(its seed and configuration rebuild the ground truth)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for key in ("seed", "days", "config", "per_day", "format"):
        if key not in manifest:
            raise ValueError(f"{path}: manifest has no {key!r}")
    return manifest


def _read_rows(
    log_dir: Path, entry: dict[str, Any], fmt: str, rerank_candidates: int = GROUP_SIZE
) -> dict[str, np.ndarray]:
    """The day's valid, de-duplicated rows: the columns the replay needs, one entry per row.

    A clean day (no corrupt rows in the manifest) is read column-wise; otherwise every row goes
    through the simulator's reference validator and duplicates are dropped, so the rows left are
    exactly the clean log's.
    """
    path = log_dir / entry["path"]
    if fmt == "parquet" and entry.get("corrupt_rows", 0) == 0:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=list(_NEEDED))
        out = {n: table.column(n).to_numpy() for n in (*_ROW_COLUMNS, *_ITEM_COLUMNS)}
        for name in SEQUENCE_FEATURES:
            out[name] = table.column(name)
        return out
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = [parse_csv_row(fields)[0] for fields in csv.DictReader(f)]
    else:
        raise ValueError(f"log format {fmt!r}: the replay reads the simulator's parquet or csv")
    seen: set[tuple[Any, Any]] = set()
    kept = []
    for row in rows:
        if row_errors(row, rerank_candidates):
            continue
        key = row_key(row)
        if key in seen:
            continue
        seen.add(key)
        kept.append(row)
    dropped = len(rows) - len(kept)
    if dropped != entry.get("corrupt_rows", dropped):
        raise ValueError(
            f"{path}: {dropped} rows are malformed or duplicated, the manifest says "
            f"{entry['corrupt_rows']}: this is not the log the manifest describes"
        )
    out = {n: np.array([r[n] for r in kept], np.int64) for n in (*_ROW_COLUMNS, *_ITEM_COLUMNS)}
    for name in SEQUENCE_FEATURES:
        out[name] = [r[name] for r in kept]
    return out


def _group_requests(rows: dict[str, np.ndarray]) -> LoggedRequests:
    order = np.lexsort((rows["video_id"], rows["request_timestamp"], rows["request_id"]))
    rid = rows["request_id"][order]
    starts = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])
    ends = np.r_[starts[1:], len(rid)]
    first = order[starts]
    context = {n: rows[n][first].astype(np.int64) for n in CONTEXT_COLUMNS}
    r = len(starts)
    width = int((ends - starts).max())
    logged = np.full((r, width), PAD_ID, np.int64)
    production = np.full((r, GROUP_SIZE), PAD_ID, np.int64)
    exposed = np.zeros(r, np.int64)
    video, rank_pos = rows["video_id"], rows["rank_pos"]
    rerank, shown = rows["rerank_index"], rows["realshow"]
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        members = order[a:b]
        logged[i, : b - a] = video[members]
        pos = members[rank_pos[members] == 1]
        pos = pos[np.argsort(rerank[pos], kind="stable")][:GROUP_SIZE]
        production[i, : len(pos)] = video[pos]
        exposed[i] = int(shown[members].sum())
    sequences = {n: np.full((r, SEQ_LEN), PAD_ID, np.int64) for n in SEQUENCE_FEATURES}
    lengths = np.zeros(r, np.int64)
    for name in SEQUENCE_FEATURES:
        column = rows[name]
        # An Arrow column (clean Parquet) converts only the rows taken; lists are indexed.
        picked = (
            column.take(first).to_pylist()
            if hasattr(column, "take")
            else [column[row] for row in first]
        )
        for i, values in enumerate(picked):
            values = values[:SEQ_LEN]
            sequences[name][i, : len(values)] = values
            lengths[i] = len(values)
    time_order = np.argsort(context["request_timestamp"], kind="stable")
    grouped = LoggedRequests(context, sequences, lengths, production, exposed, logged)
    return grouped.take(time_order)


def _check_against_world(world: World, rows: dict[str, np.ndarray], where: str) -> None:
    video = rows["video_id"]
    if video.size and (video.min() < 0 or video.max() >= world.num_items):
        raise ValueError(f"{where}: video ids outside the world's {world.num_items} videos")
    users = rows["user_id"]
    if users.size and (users.min() < 0 or users.max() >= world.num_users):
        raise ValueError(f"{where}: user ids outside the world's {world.num_users} users")
    checks = {
        "author_id": world.author,
        "category_level_two": world.category_two,
        "upload_timestamp": world.upload_timestamp,
        "duration": world.duration,
    }
    user_checks = {
        "device_id": world.device_id,
        "age": world.age,
        "gender": world.gender,
        "province": world.province,
    }
    for name, truth in [*checks.items(), *user_checks.items()]:
        key = rows["user_id"] if name in user_checks else video
        wrong = np.flatnonzero(rows[name] != truth[key])
        if wrong.size:
            i = wrong[0]
            raise ValueError(
                f"{where}: {wrong.size} rows disagree with the rebuilt world on {name} (request "
                f"{rows['request_id'][i]}, video {video[i]}: logged {rows[name][i]}, world "
                f"{truth[key[i]]}); the manifest does not describe this log"
            )
    if np.any(rows["upload_timestamp"] > rows["request_timestamp"]):
        raise ValueError(f"{where}: a logged video was uploaded after its request")


def load_day(log_dir: str | Path, day: int | None = None) -> ReplayDay:
    """Rebuilds ``day`` of the simulated log in ``log_dir`` (default: its last day).

    Args:
      log_dir: a folder written by ``lcron simulate`` (``manifest.json`` + day folders).
      day: the day to replay (0-based).

    Returns:
      The day's requests (valid rows only) and the world as it was during that day.

    Raises:
      FileNotFoundError: ``log_dir`` has no simulator manifest.
      ValueError: ``day`` is not in the log, or the log disagrees with the rebuilt world.
    """
    log_dir = Path(log_dir)
    manifest = read_manifest(log_dir)
    days = int(manifest["days"])
    day = days - 1 if day is None else int(day)
    if not 0 <= day < days:
        raise ValueError(f"day {day}: the log in {log_dir} has days 0..{days - 1}")
    entry = manifest["per_day"][day]
    config = SimulatorConfig.from_dict(manifest["config"])
    world = world_on_day(config, int(manifest["seed"]), day)
    rows = _read_rows(log_dir, entry, manifest["format"], config.rerank_candidates)
    if not len(rows["request_id"]):
        raise ValueError(f"{log_dir / entry['path']}: no valid row")
    _check_against_world(world, rows, str(log_dir / entry["path"]))
    requests = _group_requests(rows)
    if len(requests) != int(entry["requests"]):
        raise ValueError(
            f"{log_dir / entry['path']}: {len(requests)} requests, the manifest says "
            f"{entry['requests']}"
        )
    return ReplayDay(world=world, day=day, requests=requests, manifest=manifest)


def logged_items(log_dir: str | Path, days: list[int] | tuple[int, ...]) -> np.ndarray:
    """Sorted unique video ids logged as candidates on ``days`` (valid rows): the item corpus a
    model trained on those days knows (``models.data.item_corpus`` of the same rows)."""
    log_dir = Path(log_dir)
    manifest = read_manifest(log_dir)
    passed = SimulatorConfig.from_dict(manifest["config"]).rerank_candidates
    ids = [
        _read_rows(log_dir, manifest["per_day"][d], manifest["format"], passed)["video_id"]
        for d in days
    ]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
