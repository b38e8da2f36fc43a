"""Named input conventions: ``--preset NAME`` on ``lcron ingest``, ``data.preset`` in the pipeline.

A preset is a set of ``rows.ValidationConfig`` fields describing how a source writes its logs;
explicit fields (``validation={...}`` / ``data.validation``) override the preset's.

- ``default``: our conventions, the simulator's (timestamps in ms, duration and playing_time in
  s, -1 for "no position").
- ``recflow``: a RecFlow download (Liu et al., ICLR 2025). Its README gives ``duration`` in
  milliseconds; ``request_timestamp`` is in milliseconds and ``upload_timestamp`` in seconds (the
  LCRON authors' loader turns the first into a date with ``ts // 1000``, the second as is);
  ``playing_time``'s unit is not documented: we read it in milliseconds like ``duration``, the
  unit of Kuaishou's other public logs (KuaiRand, KuaiSAR). Positions of unranked items may be
  null.
"""

from __future__ import annotations

from typing import Any

from components.recflow_example_gen.rows import ValidationConfig

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "recflow": {
        "time_units": {"upload_timestamp": "s", "duration": "ms", "playing_time": "ms"},
        "allow_missing_rank_index": True,
    },
}


def validation_fields(preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's ``ValidationConfig`` fields with ``overrides`` on top (``time_units`` merged
    per column); checked by building the config.

    Raises:
      ValueError: an unknown preset or field, or a bad unit.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    fields = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    for key, value in (overrides or {}).items():
        if key == "time_units" and isinstance(value, dict):
            fields["time_units"] = {**fields.get("time_units", {}), **value}
        else:
            fields[key] = value
    try:
        ValidationConfig(**fields)
    except TypeError as err:  # an unknown field
        raise ValueError(f"validation: {err}") from None
    return fields


def validation_config(preset: str, overrides: dict[str, Any] | None = None) -> ValidationConfig:
    """``ValidationConfig`` of ``preset`` with ``overrides`` on top."""
    return ValidationConfig(**validation_fields(preset, overrides))
