"""Atomic push of a paired (retrieval, ranking) export into a TF Serving model base.

Layout written (TF Serving's convention of integer version folders per model):

    <serving_dir>/retrieval/<version>/      SavedModel (+ assets.extra/tf_serving_warmup_requests)
    <serving_dir>/ranking/<version>/        SavedModel (+ warmup)
    <serving_dir>/models.config             TF Serving model config pinned to <version>
    <serving_dir>/manifest.json             the paired version: the push's commit point

Why this order: both SavedModels are staged and validated in a fresh process first, then each is
moved into place with one ``os.rename`` (atomic on one filesystem), then ``models.config`` and
last ``manifest.json`` are replaced atomically. The cascade service serves the pair that
``manifest.json`` names and TF Serving the versions ``models.config`` pins, so a crash at any
point leaves the previous complete pair in service; leftovers of a crashed push (staging, or
version folders newer than the manifest) are removed by the next push.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from serving import manifest as manifest_lib

STAGES: tuple[str, ...] = ("retrieval", "ranking")
STAGING = ".staging"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


class PushValidationError(RuntimeError):
    """The staged pair failed to load or answer in a fresh process; nothing was pushed."""


def existing_versions(serving_dir: Path) -> list[int]:
    """Integer version folders present under any stage, ascending."""
    versions: set[int] = set()
    for stage in STAGES:
        stage_dir = serving_dir / stage
        if stage_dir.is_dir():
            versions.update(int(p.name) for p in stage_dir.iterdir() if p.name.isdigit())
    return sorted(versions)


def next_version(serving_dir: Path, now: float | None = None) -> int:
    """A version newer than every folder present: the Unix time, bumped past collisions."""
    stamp = int(time.time() if now is None else now)
    present = existing_versions(serving_dir)
    return max(stamp, present[-1] + 1) if present else stamp


def current_version(serving_dir: Path) -> int | None:
    """The paired version the manifest names, or None before the first push."""
    try:
        return int(manifest_lib.read_manifest(serving_dir)["version"])
    except FileNotFoundError:
        return None


def remove_unpublished(serving_dir: Path) -> list[Path]:
    """Deletes staging and version folders newer than the manifest (a crashed push's leftovers).

    Returns:
      The paths removed.
    """
    removed: list[Path] = []
    staging = serving_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(staging)
    published = current_version(serving_dir)
    for stage in STAGES:
        stage_dir = serving_dir / stage
        if not stage_dir.is_dir():
            continue
        for child in stage_dir.iterdir():
            unpublished = child.name.isdigit() and (
                published is None or int(child.name) > published
            )
            if unpublished:
                shutil.rmtree(child)
                removed.append(child)
    if removed:
        logging.warning("removed leftovers of an unfinished push: %s", [str(p) for p in removed])
    return removed


def validate_in_fresh_process(
    stage_dirs: dict[str, Path], warmup_files: dict[str, Path], timeout_s: float = 300.0
) -> None:
    """Loads both SavedModels in a new Python process and replays the warmup requests.

    Our stand-in for TFX InfraValidator (which needs Docker): the process loads the models the
    way TF Serving does (from disk, with no state of this process) and answers real requests.

    Raises:
      PushValidationError: with the child's output when it fails.
    """
    cmd = [sys.executable, "-m", "components.cascade_pusher.validate_pair"]
    for stage in STAGES:
        cmd += [f"--{stage}", str(stage_dirs[stage]), f"--{stage}-warmup", str(warmup_files[stage])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        raise PushValidationError(
            f"staged pair failed validation (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    logging.info("fresh-process validation passed: %s", proc.stdout.strip()[-500:])


def push_pair(
    export_dirs: dict[str, Path],
    serving_dir: str | Path,
    warmup_records: dict[str, Sequence[bytes]],
    *,
    metrics: dict | None = None,
    validate: bool = True,
    version: int | None = None,
) -> int:
    """Pushes both stages under one version; returns the version now in service.

    Args:
      export_dirs: stage name -> SavedModel folder produced by the Trainer.
      serving_dir: the model base path (TF Serving's ``--model_base_path`` parent).
      warmup_records: stage name -> serialized ``PredictionLog`` records (at most 1000 each).
      metrics: evaluation figures recorded in the manifest.
      validate: load and query the staged pair in a fresh process before publishing.
      version: force a version number (default: ``next_version``).

    Raises:
      PushValidationError: the staged pair failed validation; the previous pair stays in service.
    """
    serving_dir = Path(serving_dir)
    serving_dir.mkdir(parents=True, exist_ok=True)
    remove_unpublished(serving_dir)
    version = version if version is not None else next_version(serving_dir)

    staging = serving_dir / STAGING / str(version)
    staged: dict[str, Path] = {}
    warmups: dict[str, Path] = {}
    for stage in STAGES:
        records = list(warmup_records.get(stage, ()))
        if len(records) > 1000:
            raise ValueError(f"{stage}: TF Serving reads at most 1000 warmup records")
        staged[stage] = staging / stage
        shutil.copytree(export_dirs[stage], staged[stage])
        warmups[stage] = staged[stage] / WARMUP_FILE
        _write_tfrecord(warmups[stage], records)

    if validate:
        try:
            validate_in_fresh_process(staged, warmups)
        except Exception:
            shutil.rmtree(serving_dir / STAGING, ignore_errors=True)
            raise

    for stage in STAGES:
        (serving_dir / stage).mkdir(exist_ok=True)
        os.rename(staged[stage], serving_dir / stage / str(version))
    shutil.rmtree(serving_dir / STAGING, ignore_errors=True)

    manifest_lib.write_models_config(serving_dir, version)
    manifest_lib.write_manifest(serving_dir, version, metrics=metrics)  # commit point
    logging.info("pushed pair version %d to %s", version, serving_dir)
    return version


def _write_tfrecord(path: Path, records: Sequence[bytes]) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
