"""What an exported cascade's stages are, in order: the record export, push and serving share.

A cascade of N stages is exported as one SavedModel per stage plus ``cascade.json`` beside them
(the order, each stage's role, cut-off and model kind); the pusher copies that order into the
push manifest and the service runs the chain it names (docs/serving.md).

``StageSpec`` is the serving-side view of a stage: the model's own stage configuration (any
object with ``name``, ``kind``, ``keep`` and ``role`` attributes, e.g. ``StageConfig``) is
converted with ``StageSpec.of``. A model without ``stage_configs`` (today's two-stage
``CascadeModel``) is the default cascade ``DEFAULT_STAGES``: retrieval (keeps 30) then ranking
(keeps 20), the paper's two-stage setting.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RETRIEVAL = "retrieval"
RESCORE = "rescore"
ROLES: tuple[str, ...] = (RETRIEVAL, RESCORE)
KINDS: tuple[str, ...] = ("two_tower", "mlp", "din")  # known today (models.config)
# Written beside the stage folders of an export (``<serving_model_dir>/cascade.json``).
EXPORT_SPEC_FILE = "cascade.json"
SAVED_MODEL_FILE = "saved_model.pb"
# A stage name is a TF Serving model name, a folder and a Server-Timing / metrics label: keep it
# plain, and clear of the names the service and the serving dir use for other things.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_NAMES: frozenset[str] = frozenset(
    {"queue", "total", "batch", "pair", "end_to_end", "request", "reload", "staging"}
)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of an exported cascade.

    Attributes:
      name: the stage's name: its SavedModel folder, TF Serving model name and response key.
      role: "retrieval" (the first stage: searches the whole corpus with its index) or
        "rescore" (scores the candidate list the previous stage kept).
      keep: how many candidates the stage keeps (its cut-off k); the service uses it for the
        stages between the first and the last (the first keeps the service's K1, the last
        returns the request's k).
      kind: the model kind (e.g. "two_tower", "mlp", "din"); informational at serving time.
    """

    name: str
    role: str
    keep: int | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"stage name {self.name!r}: must match {_NAME.pattern} (it names a folder, a "
                "TF Serving model and a response field)"
            )
        if self.name in RESERVED_NAMES:
            raise ValueError(f"stage name {self.name!r}: reserved ({sorted(RESERVED_NAMES)})")
        if self.role not in ROLES:
            raise ValueError(f"stage {self.name}: role {self.role!r} not in {ROLES}")
        keep = self.keep
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"stage {self.name}: keep must be a positive integer, got {keep!r}")
        # The kind is informational here (the model configuration validates it): any name.
        if self.kind is not None and (not isinstance(self.kind, str) or not self.kind):
            raise ValueError(f"stage {self.name}: kind must be a non-empty string or None")

    @classmethod
    def of(cls, config: Any) -> StageSpec:
        """From any object with ``name``, ``role``, ``keep`` and ``kind`` (e.g. ``StageConfig``),
        or a mapping with those keys."""
        get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k, None)
        keep = get("keep")
        return cls(
            name=get("name"),
            role=get("role"),
            keep=int(keep) if keep is not None else None,
            kind=get("kind"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_STAGES: tuple[StageSpec, ...] = (
    StageSpec("retrieval", RETRIEVAL, keep=30, kind="two_tower"),
    StageSpec("ranking", RESCORE, keep=20, kind="din"),
)
# The stage names of the two-stage cascade (and of a manifest written before N stages).
LEGACY_NAMES: tuple[str, ...] = tuple(s.name for s in DEFAULT_STAGES)


def check_chain(stages: Iterable[StageSpec]) -> tuple[StageSpec, ...]:
    """Validates an ordered cascade: >= 2 stages, unique names, retrieval first and only first.

    Raises:
      ValueError: naming the offending stage.
    """
    stages = tuple(stages)
    if len(stages) < 2:
        raise ValueError(f"cascade: needs at least 2 stages, got {[s.name for s in stages]}")
    seen: set[str] = set()
    for position, stage in enumerate(stages):
        if not isinstance(stage, StageSpec):
            raise TypeError(f"cascade: stage {position} is a {type(stage).__name__}, not StageSpec")
        if stage.name in seen:
            raise ValueError(f"cascade: stage name {stage.name!r} appears twice")
        seen.add(stage.name)
        want = RETRIEVAL if position == 0 else RESCORE
        if stage.role != want:
            raise ValueError(
                f"cascade: stage {position} ({stage.name}) has role {stage.role!r}; the first "
                "stage must be the retrieval stage and every later one a rescore stage"
            )
    return stages


def from_model(model: Any) -> tuple[StageSpec, ...]:
    """The ordered stages of a trained cascade model.

    ``model.stage_configs`` (cascade order) when the model has it; otherwise the two-stage
    default (``DEFAULT_STAGES``) of a model with ``retrieval`` and ``ranking`` stages.
    """
    configs = getattr(model, "stage_configs", None)
    if configs is None:
        return DEFAULT_STAGES
    return check_chain(StageSpec.of(c) for c in configs)


def stage_layers(model: Any, stages: Sequence[StageSpec]) -> dict[str, Any]:
    """Stage name -> Keras layer, in cascade order (``model.stage_layers``, or the aliases
    ``model.retrieval`` / ``model.ranking`` of a two-stage model)."""
    layers = getattr(model, "stage_layers", None)
    if layers is None:
        layers = {name: getattr(model, name) for name in LEGACY_NAMES}
    missing = [s.name for s in stages if s.name not in layers]
    if missing:
        raise ValueError(f"model: no layer for stage(s) {missing}; has {sorted(layers)}")
    return {s.name: layers[s.name] for s in stages}


def write_export_spec(export_dir: str | Path, stages: Sequence[StageSpec]) -> Path:
    """Writes ``<export_dir>/cascade.json`` (the ordered stages of the SavedModels there)."""
    stages = check_chain(stages)
    path = Path(export_dir) / EXPORT_SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stages": [s.to_dict() for s in stages]}, indent=2) + "\n")
    return path


def read_export_spec(export_dir: str | Path) -> tuple[StageSpec, ...] | None:
    """The stages ``cascade.json`` in ``export_dir`` names, or None without one.

    Raises:
      ValueError: the file is malformed (naming the field).
    """
    path = Path(export_dir) / EXPORT_SPEC_FILE
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
        entries = body["stages"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: stages: missing or not JSON ({err})") from err
    if not isinstance(entries, list):
        raise ValueError(f"{path}: stages: must be a list")
    try:
        return check_chain(StageSpec.of(e) for e in entries)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from err


def export_stage_dirs(model_uri: str | Path) -> tuple[tuple[StageSpec, ...], dict[str, Path]]:
    """The ordered stages and their SavedModel folders inside a Trainer ``Model`` artifact.

    The Trainer writes them under ``Format-Serving/<stage>`` (TFX's serving_model_dir) with
    ``cascade.json`` beside them; an export without ``cascade.json`` (written before N stages)
    is the two-stage default with ``retrieval`` and ``ranking`` folders.

    Raises:
      FileNotFoundError: no complete set of stage SavedModels.
    """
    root = Path(model_uri)
    for base in (root / "Format-Serving", root):
        stages = read_export_spec(base) or DEFAULT_STAGES
        dirs = {s.name: base / s.name for s in stages}
        if all((d / SAVED_MODEL_FILE).is_file() for d in dirs.values()):
            return stages, dirs
    raise FileNotFoundError(f"no complete set of stage SavedModels under {root}")
