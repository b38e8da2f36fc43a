"""``lcron run``: the whole pipeline on LocalDagRunner (issue 7; not implemented yet)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder of logs (default: simulate a small log)")
    parser.add_argument("--out", default="outputs", help="pipeline root, metadata and serving dir")


def run(args: argparse.Namespace) -> int:
    print(
        "lcron run will: simulate a small RecFlow-schema log (unless --data is given), run\n"
        "ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> Transform -> Trainer ->\n"
        "evaluation -> push of both stages on LocalDagRunner with SQLite ML Metadata under\n"
        f"{args.out}/, and print where the models went and the evaluation table.\n"
        "error: not implemented yet (the pipeline issue has not landed).",
        file=sys.stderr,
    )
    return 3
