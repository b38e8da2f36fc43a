"""``lcron experiment``: compare loss methods (and ablations) on simulated logs or your own.

The paper's streaming protocol (train on the days before t, test on day t) on the simulator's
logs, or on a folder of daily logs with ``--data`` (e.g. a RecFlow download: ``--format
feather --day-pattern 'all_stage/2024-01-{day:02d}.feather'``). ``--data``, ``--format`` and
``--day-pattern`` set the experiment's ``data`` section, the same fields as ``lcron run``'s
``data`` (``pipeline.config.DataConfig``); ``--set data.label_mode=...`` sets any other.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment JSON (experiments/configs/)")
    parser.add_argument("--out", required=True, help="output folder; re-running resumes there")
    parser.add_argument(
        "--workers", type=int, default=1, help="cells trained at once, one process each (default 1)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="stream every log record to stderr instead of <out>/logs/run-<timestamp>.log",
    )
    parser.add_argument("--data", help="folder of daily logs (default: the simulator's logs)")
    parser.add_argument("--format", help="log file format: parquet, csv or feather")
    parser.add_argument(
        "--day-pattern",
        help="glob of one day's files under --data, {day} the day number "
        "(e.g. 'all_stage/2024-01-{day:02d}.feather')",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set eval_days=[20] --set data.label_mode="
        "ground_truth (repeatable)",
    )


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, then the data flags as ``data.*`` overrides."""
    out = list(getattr(args, "set", None) or [])
    for flag, field in (
        ("data", "input_base"),
        ("format", "format"),
        ("day_pattern", "day_pattern"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"data.{field}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    from experiments import config as experiment_config

    try:
        config = experiment_config.load(args.config, overrides(args))
    except (OSError, ValueError, TypeError) as err:
        print(f"lcron experiment: {err}", file=sys.stderr)
        return 2
    from experiments.report import columns, markdown_table
    from experiments.runner import run_experiment
    from pipeline import console

    # One line per cell on the terminal (stderr); TensorFlow, TFX and Beam go to the log file.
    with console.session("experiment", args.out, verbose=getattr(args, "verbose", False)) as ui:
        results = run_experiment(config, args.out, workers=args.workers)
    if ui.failed:
        return 1
    print(markdown_table(results["summary"], columns(config)))
    print(
        f"results: {args.out}/results.json, results.md, recall_by_method.png, recall_by_day.png,"
        " recall_by_stage.png"
    )
    return 0
