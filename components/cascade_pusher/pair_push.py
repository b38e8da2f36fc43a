"""Atomic push of a cascade's N stage exports, as one version, into a TF Serving model base.

Layout written (TF Serving's convention of integer version folders per model):

    <serving_dir>/<stage>/<version>/        SavedModel per stage, in cascade order (retrieval,
                                            ..., ranking) + assets.extra/tf_serving_warmup_requests
    <serving_dir>/models.config             TF Serving model config: every stage pinned to <version>
    <serving_dir>/manifest.json             the N-tuple's version and order: the commit point

Why this order: every stage's SavedModel is staged and validated in a fresh process first, then
each is moved into place with one ``os.rename`` (atomic on one filesystem), then
``models.config`` and last ``manifest.json`` are replaced atomically. The cascade service serves
the N-tuple that ``manifest.json`` names and TF Serving the versions ``models.config`` pins, so a
crash at any point leaves the previous complete N-tuple in service; leftovers of a crashed push
(staging, or version folders newer than the manifest) are removed by the next push.

``push_cascade`` is the N-stage push; ``push_pair`` (the two-stage call shape, a dict of
``retrieval`` and ``ranking`` folders) is the same push with the default stages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from models import stage_spec
from models.stage_spec import StageSpec
from serving import manifest as manifest_lib

STAGES: tuple[str, ...] = stage_spec.LEGACY_NAMES  # the two-stage default
STAGING = ".staging"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


class PushValidationError(RuntimeError):
    """The staged N-tuple failed to load or answer in a fresh process; nothing was pushed."""


class IndexRecallError(PushValidationError):
    """Retrieval's approximate index recalls too little of brute force's top K; not pushed."""


# Where the exporter writes the retrieval index's report (models.exporter.INDEX_REPORT; not
# imported: that module imports TensorFlow).
INDEX_REPORT = Path("assets.extra") / "index.json"


def check_index(
    retrieval_dir: Path, min_recall: float | None, stage: str = "retrieval"
) -> dict | None:
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
            f"{stage}: approximate index with no measured recall ({path} missing or without "
            f"recall_at_k); refusing to push below the floor {min_recall}"
        )
    if recall < min_recall:
        raise IndexRecallError(
            f"{stage}: index {report.get('kind')} recall@{report.get('k')} against brute force "
            f"is {recall:.4f} on {report.get('recall_queries')} eval queries, below the floor "
            f"{min_recall}; not pushed (search more partitions: training.index.target_recall, "
            f"or num_leaves_to_search; with quantized scoring, num_reordering_candidates)"
        )
    return report


def _stage_names(serving_dir: Path, stages: Sequence[str] = ()) -> list[str]:
    """``stages`` plus the stages of the manifest in service (a push may change the chain)."""
    names = list(stages) or list(STAGES)
    with contextlib.suppress(FileNotFoundError, manifest_lib.ManifestError):
        names += [n for n in manifest_lib.read_manifest(serving_dir)["order"] if n not in names]
    return names


def existing_versions(serving_dir: Path, stages: Sequence[str] = ()) -> list[int]:
    """Integer version folders present under any stage, ascending.

    Args:
      stages: stage folders to look in besides those of the manifest in service (default: the
        two-stage names).
    """
    versions: set[int] = set()
    for stage in _stage_names(serving_dir, stages):
        stage_dir = serving_dir / stage
        if stage_dir.is_dir():
            versions.update(int(p.name) for p in stage_dir.iterdir() if p.name.isdigit())
    return sorted(versions)


def next_version(serving_dir: Path, now: float | None = None, stages: Sequence[str] = ()) -> int:
    """A version newer than every folder present: the Unix time, bumped past collisions."""
    stamp = int(time.time() if now is None else now)
    present = existing_versions(serving_dir, stages)
    return max(stamp, present[-1] + 1) if present else stamp


def current_version(serving_dir: Path) -> int | None:
    """The version the manifest names, or None before the first push."""
    try:
        return int(manifest_lib.read_manifest(serving_dir)["version"])
    except FileNotFoundError:
        return None


def remove_unpublished(serving_dir: Path, stages: Sequence[str] = ()) -> list[Path]:
    """Deletes staging and version folders newer than the manifest (a crashed push's leftovers).

    Args:
      stages: stage folders to clean besides those of the manifest in service (the stages of
        the push about to start; default: the two-stage names).

    Returns:
      The paths removed.
    """
    removed: list[Path] = []
    staging = serving_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(staging)
    published = current_version(serving_dir)
    for stage in _stage_names(serving_dir, stages):
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
    stage_dirs: Mapping[str, Path], warmup_files: Mapping[str, Path], timeout_s: float = 300.0
) -> None:
    """Loads every stage's SavedModel in a new Python process and replays its warmup requests.

    Our stand-in for TFX InfraValidator (which needs Docker): the process loads the models the
    way TF Serving does (from disk, with no state of this process) and answers real requests.

    Raises:
      PushValidationError: with the child's output when it fails.
    """
    cmd = [sys.executable, "-m", "components.cascade_pusher.validate_pair"]
    for stage, model_dir in stage_dirs.items():
        cmd += ["--stage", stage, str(model_dir), str(warmup_files[stage])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        raise PushValidationError(
            f"staged stages {list(stage_dirs)} failed validation (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    logging.info("fresh-process validation passed: %s", proc.stdout.strip()[-500:])


def push_cascade(
    export_dirs: Mapping[str, Path],
    serving_dir: str | Path,
    warmup_records: Mapping[str, Sequence[bytes]],
    *,
    stages: Sequence[StageSpec] | None = None,
    metrics: dict | None = None,
    validate: bool = True,
    version: int | None = None,
    min_index_recall: float | None = None,
) -> int:
    """Pushes every stage of a cascade under one version; returns the version now in service.

    Args:
      export_dirs: stage name -> SavedModel folder produced by the Trainer.
      serving_dir: the model base path (TF Serving's ``--model_base_path`` parent).
      warmup_records: stage name -> serialized ``PredictionLog`` records (at most 1000 each).
      stages: the cascade in order (``models.stage_spec``); default: the two-stage
        ``retrieval``, ``ranking``. ``export_dirs`` must name exactly these stages.
      metrics: evaluation figures recorded in the manifest.
      validate: load and query the staged stages in a fresh process before publishing.
      version: force a version number (default: ``next_version``).
      min_index_recall: refuse an approximate index of the retrieval (first) stage whose
        recall@K against brute force (measured at export, ``assets.extra/index.json``) is below
        this; None: no floor. The index report goes into the manifest either way.

    Raises:
      IndexRecallError: the retrieval index is below the recall floor; nothing was staged.
      PushValidationError: the staged stages failed validation; the previous N-tuple stays in
        service.
      ValueError: ``export_dirs`` and ``stages`` disagree, or the chain is malformed.
    """
    chain = stage_spec.check_chain(stages if stages is not None else stage_spec.DEFAULT_STAGES)
    names = [s.name for s in chain]
    if set(export_dirs) != set(names):
        raise ValueError(f"export_dirs: names stages {sorted(export_dirs)}, the cascade is {names}")
    unknown = sorted(set(warmup_records) - set(names))
    if unknown:
        raise ValueError(f"warmup_records: names no stage of the cascade: {unknown}")
    first = chain[0].name
    index_report = check_index(Path(export_dirs[first]), min_index_recall, first)
    serving_dir = Path(serving_dir)
    serving_dir.mkdir(parents=True, exist_ok=True)
    remove_unpublished(serving_dir, names)
    version = version if version is not None else next_version(serving_dir, stages=names)

    staging = serving_dir / STAGING / str(version)
    staged: dict[str, Path] = {}
    warmups: dict[str, Path] = {}
    for stage in names:
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

    for stage in names:
        (serving_dir / stage).mkdir(exist_ok=True)
        os.rename(staged[stage], serving_dir / stage / str(version))
    shutil.rmtree(serving_dir / STAGING, ignore_errors=True)

    manifest_lib.write_models_config(serving_dir, version, stages=names)
    stage_info = {first: {"index": index_report}} if index_report else None
    manifest_lib.write_manifest(  # the commit point
        serving_dir, version, metrics=metrics, stage_info=stage_info, stages=chain
    )
    logging.info("pushed cascade %s version %d to %s", names, version, serving_dir)
    return version


def push_pair(
    export_dirs: Mapping[str, Path],
    serving_dir: str | Path,
    warmup_records: Mapping[str, Sequence[bytes]],
    **kwargs,
) -> int:
    """``push_cascade`` of the two-stage cascade (``export_dirs``: retrieval and ranking)."""
    return push_cascade(export_dirs, serving_dir, warmup_records, **kwargs)


def _write_tfrecord(path: Path, records: Sequence[bytes]) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
