"""The push manifest: which (retrieval, ranking) pair is in service, and TF Serving's config.

Layout of a serving dir (TF Serving's convention of integer version folders per model):

    <serving_dir>/retrieval/<version>/   SavedModel
    <serving_dir>/ranking/<version>/     SavedModel
    <serving_dir>/models.config          TF Serving model config, both models pinned to <version>
    <serving_dir>/manifest.json          {"version": V, "stages": {...}, "pushed_at": ..., ...}

``manifest.json`` is the commit point of a push: it is written last, atomically (temporary file
+ ``os.replace``), and only once both SavedModels are complete, so a reader sees either the
previous pair or the new one, never half of each. The cascade service polls it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STAGES: tuple[str, ...] = ("retrieval", "ranking")
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
) -> Path:
    """Publishes ``version`` as the pair in service (the push's commit point).

    Args:
      serving_dir: the serving dir holding ``retrieval/<version>`` and ``ranking/<version>``.
      version: the paired version (an integer, TF Serving's convention).
      metrics: optional evaluation figures to record (JSON-serializable; numpy scalars are
        converted).
      stage_info: optional extra fields per stage, e.g. ``{"retrieval": {"index": {...}}}``
        (the retrieval index's kind and recall@K measured at export).

    Returns:
      The manifest path.

    Raises:
      FileNotFoundError: a stage's SavedModel of ``version`` is missing or incomplete (no
        ``saved_model.pb``); nothing is written.
    """
    serving_dir = Path(serving_dir)
    version = _check_version(version)
    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        model_dir = stage_dir(serving_dir, stage, version)
        if not (model_dir / SAVED_MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{stage}: no complete SavedModel at {model_dir} (missing {SAVED_MODEL_FILE}); "
                "the manifest is written only after both stages are in place"
            )
        stages[stage] = {"model_name": stage, "version": version, "path": f"{stage}/{version}"}
        extra = (stage_info or {}).get(stage, {})
        clash = sorted(set(extra) & set(stages[stage]))
        if clash:
            raise ValueError(f"stage_info.{stage}: may not override {clash}")
        stages[stage].update(extra)
    manifest = {
        "version": version,
        "stages": stages,
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
    """Reads and checks ``<serving_dir>/manifest.json``.

    Returns:
      The manifest dict (see the module docstring), with ``stages`` holding both stages.

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
    for stage in STAGES:
        entry = stages.get(stage)
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: stages.{stage}: missing")
        for key in ("model_name", "version", "path"):
            if key not in entry:
                raise ManifestError(f"{path}: stages.{stage}.{key}: missing")
        if _check_version(entry["version"]) != version:
            # The two stages of one training run are always used together.
            raise ManifestError(
                f"{path}: stages.{stage}.version: {entry['version']} differs from the paired "
                f"version {version}"
            )
    return manifest


def models_config_text(version: int, base_path_in_container: str = "/models") -> str:
    """TF Serving ``ModelServerConfig`` (text proto) serving both stages pinned to ``version``."""
    version = _check_version(version)
    base = base_path_in_container.rstrip("/") or "/"
    configs = []
    for stage in STAGES:
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
    serving_dir: str | Path, version: int, base_path_in_container: str = "/models"
) -> Path:
    """Writes ``<serving_dir>/models.config`` atomically (for ``--model_config_file``).

    Args:
      serving_dir: the serving dir on this machine.
      version: the paired version both models are pinned to (specific version policy).
      base_path_in_container: where TF Serving sees ``serving_dir`` (docker-compose mounts it at
        ``/models``); each model's base path is ``<base>/<stage>``.

    Returns:
      The config path.
    """
    path = Path(serving_dir) / MODELS_CONFIG_FILE
    _atomic_write_text(path, models_config_text(version, base_path_in_container))
    return path
