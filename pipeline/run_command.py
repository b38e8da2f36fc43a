"""``lcron run``: the whole pipeline on LocalDagRunner, then a summary.

With no argument it runs on the embedded default: it simulates a small log under
``<output_dir>/logs`` (reused on later runs: the simulator is deterministic for a seed) and runs
every component; re-running hits TFX's cache for whatever did not change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.config import PipelineConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file overriding the defaults of PipelineConfig")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set training.loss.method=bce (repeatable)",
    )
    parser.add_argument("--data", help="folder of daily logs (default: simulate a small log)")
    parser.add_argument("--out", help="output folder (default: outputs/)")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="Beam pipeline arg, e.g. --beam-arg=--runner=DataflowRunner (repeatable; replaces"
        " the local default)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def simulated_logs(config: PipelineConfig) -> str:
    """Simulates the embedded default log once; later runs with the same settings reuse it."""
    from simulator import SimulatorConfig, simulate_once

    data = config.data
    out = Path(config.output_dir) / "logs"
    _, written = simulate_once(
        SimulatorConfig(),
        out,
        days=data.simulate_days,
        requests_per_day=data.simulate_requests_per_day,
        seed=data.simulate_seed,
        fmt=data.format,
        corrupt_fraction=data.simulate_corrupt_fraction,
        progress=True,
    )
    state = "simulated" if written else "reusing the simulated"
    days, requests = data.simulate_days, data.simulate_requests_per_day
    # stderr: stdout carries the summary (JSON with --json).
    print(f"{state} log of {days} days x {requests} requests", file=sys.stderr)
    return str(out)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.out:
        overrides.append(f"output_dir={args.out}")
    if args.data:
        overrides.append(f"data.input_base={args.data}")
    if args.beam_arg is not None:
        overrides.append(f"beam_pipeline_args={json.dumps(args.beam_arg)}")
    try:
        config = load_config(args.config, overrides)
    except (ValueError, OSError) as err:
        print(f"lcron run: {err}", file=sys.stderr)
        return 2

    from components.example_validation.executor import DataAnomaliesError
    from components.recflow_example_gen.beam_pipeline import IngestionError
    from pipeline import local_runner

    started = time.monotonic()
    input_base = config.data.input_base or simulated_logs(config)
    try:
        local_runner.run(config, input_base)
    except (IngestionError, DataAnomaliesError) as err:  # bad input: the message says why
        print(f"lcron run: {err}", file=sys.stderr)
        return 1
    result = local_runner.summary(config)
    result["wall_time_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(local_runner.format_summary(result))
        print(f"wall time: {result['wall_time_s']} s")
    return 0
