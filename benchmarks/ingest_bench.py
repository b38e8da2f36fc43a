"""Ingestion throughput on Beam's DirectRunner: rows/second for a simulated log.

Simulates the log once, then runs the standalone ingestion (``run_ingestion``, the same Beam job
as the TFX executor) ``--runs`` times and prints each run's wall time and throughput and the
median. Wall time includes Beam's start-up and the final writes, as a user sees it.

    python benchmarks/ingest_bench.py                      # 20,000 requests, 3 runs
    python benchmarks/ingest_bench.py --requests 2000 --mode in_memory
    lcron bench ingest -- --requests 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

MODES = {
    "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=0"],
    "in_memory": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the log")
    parser.add_argument("--days", type=int, default=2, help="days (= files) the requests span")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    parser.add_argument("--corrupt-fraction", type=float, default=0.01)
    parser.add_argument("--mode", default="multi_processing", choices=sorted(MODES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from components.recflow_example_gen import beam_pipeline
    from simulator import SimulatorConfig, simulate

    with tempfile.TemporaryDirectory(prefix="ingest_bench_") as tmp:
        logs = Path(tmp) / "logs"
        started = time.perf_counter()
        manifest = simulate(
            SimulatorConfig(),
            logs,
            days=args.days,
            requests_per_day=args.requests // args.days,
            seed=args.seed,
            fmt=args.format,
            corrupt_fraction=args.corrupt_fraction,
        )
        simulate_s = time.perf_counter() - started
        splits = {f"day_{d:02d}": f"day_{d:02d}/*" for d in range(args.days)}
        config = beam_pipeline.IngestConfig(input_format=args.format)
        runs = []
        for i in range(args.runs):
            started = time.perf_counter()
            stats = beam_pipeline.run_ingestion(
                splits, str(logs), str(Path(tmp) / f"out_{i}"), config, MODES[args.mode]
            )
            seconds = time.perf_counter() - started
            runs.append(seconds)
            print(
                f"run {i + 1}: {seconds:.1f} s, {stats['rows_read'] / seconds:,.0f} rows/s, "
                f"{stats['requests_written'] / seconds:,.0f} requests/s",
                file=sys.stderr,
            )
    median = statistics.median(runs)
    result = {
        "requests": manifest["requests"],
        "rows": manifest["rows"],
        "format": args.format,
        "mode": args.mode,
        "cpus": os.cpu_count(),
        "simulate_s": round(simulate_s, 1),
        "runs_s": [round(s, 2) for s in runs],
        "median_s": round(median, 2),
        "median_rows_per_s": round(manifest["rows"] / median),
        "median_requests_per_s": round(manifest["requests"] / median),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"ingestion of {result['requests']:,} requests / {result['rows']:,} rows "
            f"({args.format}, DirectRunner {args.mode}, {result['cpus']} CPUs): median of "
            f"{args.runs} runs {median:.1f} s = {result['median_rows_per_s']:,} rows/s, "
            f"{result['median_requests_per_s']:,} requests/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
