"""The push manifest: which N-tuple of stage SavedModels is in service, and TF Serving's config.

Layout of a serving dir (TF Serving's convention of integer version folders per model):

    <serving_dir>/<stage>/<version>/     SavedModel, one per stage (retrieval, ..., ranking)
    <serving_dir>/models.config          TF Serving model config, every stage pinned to <version>
    <serving_dir>/manifest.json          the version in service (below)

``manifest.json`` (format 2)::

    {"format": 2, "version": V, "order": ["retrieval", "prerank", "ranking"],
     "stages": {"retrieval": {"model_name": "retrieval", "version": V, "path": "retrieval/V",
                              "position": 0, "role": "retrieval", "keep": 40, "kind": ...,
                              "index": {...}},
                "prerank": {..., "position": 1, "role": "rescore", "keep": 30}, ...},
     "pushed_at": "...", "metrics": {...}}

``order`` is the chain the service runs; ``stages`` stays an object keyed by stage name, so a
two-stage manifest of format 2 is also a valid manifest of format 1 (the two-stage format
written before N stages: no ``format``/``order``, stages ``retrieval`` and ``ranking``), and
``read_manifest`` reads a format-1 manifest as that two-stage chain: existing deployments and
older readers keep working.

``manifest.json`` is the commit point of a push: it is written last, atomically (temporary file
+ ``os.replace``), and only once every stage's SavedModel is complete, so a reader sees either
the previous N-tuple or the new one, never a mix. The cascade service polls it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models import stage_spec
from models.stage_spec import StageSpec

# The two-stage default (and the stages of a format-1 manifest).
STAGES: tuple[str, ...] = stage_spec.LEGACY_NAMES
FORMAT = 2
MANIFEST_FILE = "manifest.json"
MODELS_CONFIG_FILE = "models.config"
# TF Serving (and TFX's Pusher) treat a version folder as complete once saved_model.pb is there.
SAVED_MODEL_FILE = "saved_model.pb"


class ManifestError(ValueError):
    """The manifest exists but is malformed; the message names the field."""


def stage_dir(serving_dir: str | Path, stage: str, version: int) -> Path:
    """``<serving_dir>/<stage>/<version>``: where a stage's SavedModel of a version lives."""
    return Path(serving_dir) / stage / str(int(version))


def _atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ManifestError(f"version: must be a non-negative integer, got {version!r}")
    return version


def write_manifest(
    serving_dir: str | Path,
    version: int,
    metrics: dict[str, Any] | None = None,
    stage_info: dict[str, dict[str, Any]] | None = None,
    stages: Sequence[StageSpec] | None = None,
) -> Path:
    """Publishes ``version`` as the cascade in service (the push's commit point).

    Args:
      serving_dir: the serving dir holding ``<stage>/<version>`` for every stage.
      version: the cascade's version (an integer, TF Serving's convention), shared by all
        stages.
      metrics: optional evaluation figures to record (JSON-serializable; numpy scalars are
        converted).
      stage_info: optional extra fields per stage, e.g. ``{"retrieval": {"index": {...}}}``
        (the retrieval index's kind and recall@K measured at export).
      stages: the cascade in order (default: the two-stage ``stage_spec.DEFAULT_STAGES``).

    Returns:
      The manifest path.

    Raises:
      FileNotFoundError: a stage's SavedModel of ``version`` is missing or incomplete (no
        ``saved_model.pb``); nothing is written.
    """
    serving_dir = Path(serving_dir)
    version = _check_version(version)
    chain = stage_spec.check_chain(stages if stages is not None else stage_spec.DEFAULT_STAGES)
    unknown = sorted(set(stage_info or {}) - {s.name for s in chain})
    if unknown:
        raise ValueError(f"stage_info: names no stage of the cascade: {unknown}")
    entries: dict[str, dict[str, Any]] = {}
    for position, spec in enumerate(chain):
        stage = spec.name
        model_dir = stage_dir(serving_dir, stage, version)
        if not (model_dir / SAVED_MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{stage}: no complete SavedModel at {model_dir} (missing {SAVED_MODEL_FILE}); "
                "the manifest is written only after every stage is in place"
            )
        entries[stage] = {
            "model_name": stage,
            "version": version,
            "path": f"{stage}/{version}",
            "position": position,
            "role": spec.role,
            "keep": spec.keep,
            "kind": spec.kind,
        }
        extra = (stage_info or {}).get(stage, {})
        clash = sorted(set(extra) & set(entries[stage]))
        if clash:
            raise ValueError(f"stage_info.{stage}: may not override {clash}")
        entries[stage].update(extra)
    manifest = {
        "format": FORMAT,
        "version": version,
        "order": [s.name for s in chain],
        "stages": entries,
        "pushed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if metrics is not None:
        manifest["metrics"] = metrics
    path = serving_dir / MANIFEST_FILE
    _atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars/arrays in metrics."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"metrics: {type(value).__name__} is not JSON serializable")


def read_manifest(serving_dir: str | Path) -> dict[str, Any]:
    """Reads and checks ``<serving_dir>/manifest.json`` (format 2, or the two-stage format 1).

    Returns:
      The manifest dict (see the module docstring), normalised to format 2: ``order`` lists the
      stages in cascade order and each stage entry has ``position`` and ``role`` (a format-1
      manifest is read as retrieval then ranking, with ``keep`` and ``kind`` None).

    Raises:
      FileNotFoundError: there is no manifest yet (nothing pushed).
      ManifestError: the manifest is malformed; the message names the field.
    """
    path = Path(serving_dir) / MANIFEST_FILE
    text = path.read_text(encoding="utf-8")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: must be a JSON object")
    version = _check_version(manifest.get("version"))
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        raise ManifestError(f"{path}: stages: missing or not an object")
    fmt = manifest.get("format", 1)
    if fmt not in (1, FORMAT):
        raise ManifestError(f"{path}: format: {fmt!r} is not 1 or {FORMAT} (a newer pusher?)")
    if fmt == 1:
        order = list(STAGES)
    else:
        order = manifest.get("order")
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
            raise ManifestError(f"{path}: order: missing or not a list of stage names")
    for position, stage in enumerate(order):
        entry = stages.get(stage)
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: stages.{stage}: missing")
        for key in ("model_name", "version", "path"):
            if key not in entry:
                raise ManifestError(f"{path}: stages.{stage}.{key}: missing")
        if _check_version(entry["version"]) != version:
            # The stages of one training run are always used together.
            raise ManifestError(
                f"{path}: stages.{stage}.version: {entry['version']} differs from the "
                f"cascade's version {version}"
            )
        if fmt == 1:
            entry.setdefault("keep", None)
            entry.setdefault("kind", None)
            entry["position"] = position
            entry["role"] = stage_spec.RETRIEVAL if position == 0 else stage_spec.RESCORE
        elif entry.get("position") != position:
            raise ManifestError(
                f"{path}: stages.{stage}.position: {entry.get('position')!r} but the stage is "
                f"at {position} in order"
            )
    try:
        stage_spec.check_chain(spec_of(name, stages[name]) for name in order)
    except (ValueError, TypeError) as err:
        raise ManifestError(f"{path}: stages: {err}") from err
    manifest["format"] = FORMAT
    manifest["order"] = order
    return manifest


def spec_of(name: str, entry: dict[str, Any]) -> StageSpec:
    """The ``StageSpec`` of the manifest's stage ``name``."""
    return StageSpec(name, entry.get("role"), keep=entry.get("keep"), kind=entry.get("kind"))


def chain(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(stage name, stage entry) in cascade order, of a manifest from ``read_manifest``."""
    return [(name, manifest["stages"][name]) for name in manifest["order"]]


def models_config_text(
    version: int, base_path_in_container: str = "/models", stages: Sequence[str] = STAGES
) -> str:
    """TF Serving ``ModelServerConfig`` (text proto) serving every stage pinned to ``version``."""
    version = _check_version(version)
    base = base_path_in_container.rstrip("/") or "/"
    configs = []
    for stage in stages:
        base_path = f"{base}/{stage}" if base != "/" else f"/{stage}"
        configs.append(
            "  config {\n"
            f'    name: "{stage}"\n'
            f'    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n'
            "    model_version_policy {\n"
            "      specific {\n"
            f"        versions: {version}\n"
            "      }\n"
            "    }\n"
            "  }\n"
        )
    return "model_config_list {\n" + "".join(configs) + "}\n"


def write_models_config(
    serving_dir: str | Path,
    version: int,
    base_path_in_container: str = "/models",
    stages: Sequence[str] = STAGES,
) -> Path:
    """Writes ``<serving_dir>/models.config`` atomically (for ``--model_config_file``).

    Args:
      serving_dir: the serving dir on this machine.
      version: the cascade's version every model is pinned to (specific version policy).
      base_path_in_container: where TF Serving sees ``serving_dir`` (docker-compose mounts it at
        ``/models``); each model's base path is ``<base>/<stage>``.
      stages: the stage (model) names, in cascade order.

    Returns:
      The config path.
    """
    path = Path(serving_dir) / MODELS_CONFIG_FILE
    _atomic_write_text(path, models_config_text(version, base_path_in_container, stages))
    return path
