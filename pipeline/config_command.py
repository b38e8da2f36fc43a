"""``lcron config show``: the configuration a run would use, and where each value came from.

    lcron config show --config my.json --set training.loss.method=bce
    lcron config show --json | jq .config.training.loss

Resolves the pipeline's configuration exactly as ``lcron run`` does (defaults, then ``--config
FILE``, then ``--set`` / ``--out`` / ``--data``), validates it, and prints every value, the
Trainer's sections completed with their defaults. A value that is not the default says where
it came from: the file, the command line, or the pipeline's own default over a section's
(``training.loss.corpus_weight``). Light: no TFX or TensorFlow import.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from models.config_schema import effective_dict, flatten, section_class
from pipeline.config import PipelineConfig, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print the resolved configuration and where each non-default value came from",
        description="print the resolved configuration (defaults < --config FILE < --set) and"
        " where each non-default value came from",
    )
    show.add_argument("--config", help="JSON file overriding the defaults of PipelineConfig")
    show.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set training.loss.method=bce (repeatable)",
    )
    show.add_argument("--data", help="as `lcron run --data`: data.input_base")
    show.add_argument("--out", help="as `lcron run --out`: output_dir")
    show.add_argument("--json", action="store_true", help="print JSON: config, sources, derived")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    flags = {}
    if args.out:
        overrides.append(f"output_dir={args.out}")
        flags["output_dir"] = "--out"
    if args.data:
        overrides.append(f"data.input_base={args.data}")
        flags["data.input_base"] = "--data"
    try:
        config, sources = resolve(args.config, overrides)
    except (ValueError, OSError) as err:
        print(f"lcron config show: {err}", file=sys.stderr)
        return 2
    if args.config:
        sources = {k: (f"--config {v}" if v == str(args.config) else v) for k, v in sources.items()}
    sources.update(flags)
    shown = describe(config, sources)
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        print(format_text(shown, args.config))
    return 0


def describe(config: PipelineConfig, given: dict[str, str]) -> dict[str, Any]:
    """``{"config": every value (nested), "sources": {dotted key: where a non-default value
    came from}, "derived": the paths the runners derive}``.

    Args:
      config: the resolved configuration.
      given: ``{dotted key: source}`` of the keys a file or the command line gave.
    """
    values = effective_dict(config)
    defaults = flatten(effective_dict(PipelineConfig(), bare_sections=True))
    sources: dict[str, str] = {}
    for key, value in flatten(values).items():
        source = _given(key, given)
        if source is not None:
            sources[key] = source
        elif key in defaults and not _same(value, defaults[key]):
            owner = _owner(PipelineConfig, key)
            sources[key] = f"pipeline default ({owner}'s: {_json(defaults[key])})"
    derived = {
        "pipeline_root": config.pipeline_root,
        "metadata_path": config.metadata_path,
        "resolved_serving_dir": config.resolved_serving_dir,
    }
    return {"config": json.loads(json.dumps(values)), "sources": sources, "derived": derived}


def format_text(shown: dict[str, Any], config_file: str | None = None) -> str:
    """One ``key = value`` line per field (values as JSON), a comment naming the source of each
    non-default value, then the derived paths."""
    order = " < --config FILE" if config_file else ""
    lines = [f"# lcron configuration: defaults{order} < --set (later wins)"]
    leaves = flatten(shown["config"])
    width = max(len(k) for k in leaves)
    for key, value in leaves.items():
        line = f"{key:<{width}} = {_json(value)}"
        if key in shown["sources"]:
            line = f"{line:<{width + 40}}  # {shown['sources'][key]}"
        lines.append(line.rstrip())
    lines.append("# derived paths")
    lines.extend(f"{k:<{width}} = {_json(v)}" for k, v in shown["derived"].items())
    return "\n".join(lines)


def _owner(cls: type, key: str) -> str:
    """The class whose field ``key`` (dotted, through nested configurations and sections) is."""
    for part in key.split(".")[:-1]:
        field = next((f for f in dataclasses.fields(cls) if f.name == part), None)
        if field is None:
            break
        nested = section_class(field) or cls.__pydantic_fields__[part].annotation
        if not (isinstance(nested, type) and dataclasses.is_dataclass(nested)):
            break
        cls = nested
    return cls.__name__


def _given(key: str, given: dict[str, str]) -> str | None:
    """The source of ``key`` or of the nearest object above it that was given whole."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        source = given.get(".".join(parts[:end]))
        if source is not None:
            return source
    return None


def _json(value: Any) -> str:
    return json.dumps(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
