"""``lcron simulate``: write simulated RecFlow-schema logs and a manifest."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``simulate`` subcommand's flags."""
    parser.add_argument("--out", required=True, help="output folder (day_XX/ and manifest.json)")
    parser.add_argument("--days", type=int, required=True, help="number of days to simulate")
    parser.add_argument("--requests-per-day", type=int, required=True, help="requests per day")
    parser.add_argument(
        "--seed", type=int, required=True, help="random seed (output is a pure function of it)"
    )
    parser.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="file format"
    )
    parser.add_argument(
        "--corrupt-fraction",
        type=float,
        default=0.0,
        help="share of written rows that are malformed or duplicated, for ingestion tests",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="JSON file of SimulatorConfig field overrides (unknown keys are an error)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    """Runs the simulator; returns 0 on success, 2 on a bad config or argument."""
    from simulator.config import SimulatorConfig
    from simulator.simulate import simulate

    try:
        config = SimulatorConfig.from_json_file(args.config) if args.config else SimulatorConfig()
        start = time.perf_counter()
        manifest = simulate(
            config,
            args.out,
            days=args.days,
            requests_per_day=args.requests_per_day,
            seed=args.seed,
            fmt=args.format,
            corrupt_fraction=args.corrupt_fraction,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"lcron simulate: error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        seconds = time.perf_counter() - start
        print(
            f"wrote {manifest['rows']} rows ({manifest['requests']} requests, "
            f"{manifest['corrupt_rows']} corrupt) over {manifest['days']} day(s) to {args.out} "
            f"in {seconds:.1f} s"
        )
    return 0
