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

import json
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


class IndexRecallError(PushValidationError):
    """Retrieval's approximate index recalls too little of brute force's top K; not pushed."""


# Where the exporter writes the retrieval index's report (models.exporter.INDEX_REPORT; not
# imported: that module imports TensorFlow).
INDEX_REPORT = Path("assets.extra") / "index.json"


def check_index(retrieval_dir: Path, min_recall: float | None) -> dict | None:
    """Reads the retrieval export's index report and enforces the recall floor.

    An exact (brute-force) index passes. An approximate index (one whose graph calls ScaNN's
    ops, whatever its report says) passes only with a measured ``recall_at_k >= min_recall``.

    Returns:
      The report (None when the export has none and is exact).

    Raises:
      IndexRecallError: the index is approximate and its recall is unknown or below the floor.
    """
    from serving import custom_ops

    path = retrieval_dir / INDEX_REPORT
    report = json.loads(path.read_text()) if path.is_file() else None
    if min_recall is None:
        return report
    approximate = bool(custom_ops.custom_ops_used(retrieval_dir)) or (
        report is not None and not report.get("exact", False)
    )
    if not approximate:
        return report
    recall = (report or {}).get("recall_at_k")
    if recall is None:
        raise IndexRecallError(
            f"retrieval: approximate index with no measured recall ({path} missing or without "
            f"recall_at_k); refusing to push below the floor {min_recall}"
        )
    if recall < min_recall:
        raise IndexRecallError(
            f"retrieval: index {report.get('kind')} recall@{report.get('k')} against brute force "
            f"is {recall:.4f} on {report.get('recall_queries')} eval queries, below the floor "
            f"{min_recall}; not pushed (search more leaves or re-score more candidates: "
            f"training.index.num_leaves_to_search / num_reordering_candidates)"
        )
    return report


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
    min_index_recall: float | None = None,
) -> int:
    """Pushes both stages under one version; returns the version now in service.

    Args:
      export_dirs: stage name -> SavedModel folder produced by the Trainer.
      serving_dir: the model base path (TF Serving's ``--model_base_path`` parent).
      warmup_records: stage name -> serialized ``PredictionLog`` records (at most 1000 each).
      metrics: evaluation figures recorded in the manifest.
      validate: load and query the staged pair in a fresh process before publishing.
      version: force a version number (default: ``next_version``).
      min_index_recall: refuse an approximate retrieval index whose recall@K against brute
        force (measured at export, ``assets.extra/index.json``) is below this; None: no floor.
        The index report goes into the manifest either way.

    Raises:
      IndexRecallError: the retrieval index is below the recall floor; nothing was staged.
      PushValidationError: the staged pair failed validation; the previous pair stays in service.
    """
    index_report = check_index(Path(export_dirs["retrieval"]), min_index_recall)
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
    stage_info = {"retrieval": {"index": index_report}} if index_report else None
    manifest_lib.write_manifest(  # the commit point
        serving_dir, version, metrics=metrics, stage_info=stage_info
    )
    logging.info("pushed pair version %d to %s", version, serving_dir)
    return version


def _write_tfrecord(path: Path, records: Sequence[bytes]) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
