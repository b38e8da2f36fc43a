"""``lcron bench NAME``: runs a benchmark script from benchmarks/ and relays its output."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def available() -> list[str]:
    """Names of the benchmark scripts (``benchmarks/<name>_bench.py``)."""
    return sorted(p.name[: -len("_bench.py")] for p in BENCHMARKS_DIR.glob("*_bench.py"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=f"benchmark to run, one of: {', '.join(available())}")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def run(args: argparse.Namespace) -> int:
    names = available()
    if args.name not in names:
        print(f"lcron bench: unknown benchmark {args.name!r}; choose from {names}", file=sys.stderr)
        return 2
    script = BENCHMARKS_DIR / f"{args.name}_bench.py"
    return subprocess.call([sys.executable, str(script), *args.args])
