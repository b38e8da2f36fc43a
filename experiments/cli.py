"""``lcron experiment``: compare loss methods (and ablations) on simulated logs."""

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


def run(args: argparse.Namespace) -> int:
    from experiments import config as experiment_config

    try:
        config = experiment_config.load(args.config)
    except (OSError, ValueError, TypeError) as err:
        print(f"lcron experiment: {err}", file=sys.stderr)
        return 2
    from experiments.report import markdown_table
    from experiments.runner import run_experiment
    from pipeline import console

    # One line per cell on the terminal (stderr); TensorFlow, TFX and Beam go to the log file.
    with console.session("experiment", args.out, verbose=args.verbose) as ui:
        results = run_experiment(config, args.out, workers=args.workers)
    if ui.failed:
        return 1
    print(markdown_table(results["summary"]))
    print(f"results: {args.out}/results.json, results.md, recall_by_method.png, recall_by_day.png")
    return 0
