"""``lcron replay``: score the pushed pair's answers for a simulated day with the true affinity."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-dir", required=True, help="push dir holding manifest.json and both stages"
    )
    parser.add_argument(
        "--sim-log", required=True, help="a log written by `lcron simulate` (with manifest.json)"
    )
    parser.add_argument("--day", type=int, default=None, help="day to replay (default: the last)")
    parser.add_argument(
        "--train-days",
        type=int,
        nargs="+",
        default=None,
        help="days the pair was trained on: their logged items are the exported corpus "
        "(default: every day before --day)",
    )
    parser.add_argument("--k", type=int, default=10, help="answers per request (default 10)")
    parser.add_argument(
        "--k1", type=int, default=100, help="retrieval items ranking re-scores (default 100)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=None, help="replay a seeded random subset"
    )
    parser.add_argument("--seed", type=int, default=0, help="subset and random-policy seed")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at once")
    parser.add_argument(
        "--backend",
        choices=("inprocess", "tfserving"),
        default="inprocess",
        help="where the pair runs, as for `lcron serve` (default: in process)",
    )
    parser.add_argument(
        "--tfserving-url", default=None, help="with --backend tfserving: http(s):// or grpc://"
    )
    parser.add_argument("--out", default=None, help="write the full report (JSON) here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from experiments.config import ReplayConfig

    try:
        config = ReplayConfig(
            k=args.k,
            k1=args.k1,
            day=args.day,
            train_days=tuple(args.train_days) if args.train_days else None,
            max_requests=args.max_requests,
            seed=args.seed,
            concurrency=args.concurrency,
        )
        from serving.backends import make_backend

        backend = make_backend(
            args.backend, args.tfserving_url, max_batch=min(args.concurrency, 256)
        )
    except ValueError as err:
        print(f"lcron replay: {err}", file=sys.stderr)
        return 2
    from experiments import replay

    try:
        report = replay.replay(args.serving_dir, args.sim_log, config, backend=backend)
    except (FileNotFoundError, ValueError) as err:
        print(f"lcron replay: {err}", file=sys.stderr)
        return 2
    if args.out:
        replay.write_report(report, args.out)
    if args.json:
        brief = {**report, "policies": {n: _brief(m) for n, m in report["policies"].items()}}
        print(json.dumps(brief, indent=2))
    else:
        print(replay.format_report(report))
    return 0


def _brief(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_request"}
