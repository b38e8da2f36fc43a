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
    parser.add_argument(
        "--json", action="store_true", help="print only the summary, as JSON, on stdout"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="stream every log record (absl, TFX, Beam) to stderr instead of the log file",
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="after the run, replay the last eval day of the simulated log against the pushed "
        "pair, scored with the true affinity (`lcron replay`; needs a simulated log)",
    )


def simulate_default_log(config: PipelineConfig, progress: bool = True) -> tuple[str, str]:
    """Simulates the embedded default log once; later runs with the same settings reuse it.

    Returns:
      (the log folder, what happened: simulated or reused, for the console).
    """
    from simulator import simulate_once

    data = config.data
    out = Path(config.output_dir) / "logs"
    _, written = simulate_once(
        data.simulator_config(),
        out,
        days=data.simulate_days,
        requests_per_day=data.simulate_requests_per_day,
        seed=data.simulate_seed,
        fmt=data.format,
        corrupt_fraction=data.simulate_corrupt_fraction,
        progress=progress,
    )
    state = "simulated" if written else "reused the simulated"
    days, requests = data.simulate_days, data.simulate_requests_per_day
    return str(out), f"{state} log of {days} days x {requests:,} requests in {out}"


def simulated_logs(config: PipelineConfig) -> str:
    """The embedded default log's folder, simulated on first use (the notebook's entry)."""
    folder, what = simulate_default_log(config)
    print(what, file=sys.stderr)  # stderr: stdout carries results
    return folder


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

    from pipeline import console, local_runner, outcomes, report
    from pipeline.graph import task_graph

    def describe(node_id: str) -> str:
        return outcomes.describe(
            outcomes.node_outcome(config.metadata_path, config.pipeline_name, node_id)
        )

    if args.replay and config.data.input_base:
        from simulator.truth import read_manifest

        try:
            read_manifest(config.data.input_base)
        except (OSError, ValueError) as err:
            print(f"lcron run --replay: {err}", file=sys.stderr)
            return 2
    simulate = not config.data.input_base
    steps = (
        len(
            task_graph(
                warm_start=config.training.warm_start,
                stop_on_anomalies=config.data.stop_on_anomalies,
            )
        )
        + 1
        + int(simulate)
    )
    steps += int(args.replay)
    replayed = None
    started = time.monotonic()
    with console.session(
        "run", config.output_dir, verbose=args.verbose, describe=describe, steps=steps
    ) as ui:
        input_base = config.data.input_base
        if simulate:
            with ui.step("simulate") as step:
                # tqdm's bar only where it is seen: with --verbose, on the terminal.
                input_base, step["detail"] = simulate_default_log(config, args.verbose)
        local_runner.run(config, input_base)
        result = local_runner.summary(config)
        result["wall_time_s"] = round(time.monotonic() - started, 1)
        result["log_file"] = str(ui.log_path) if ui.log_path else None
        if args.replay:
            with ui.step("replay") as step:
                replayed = replay_pushed(config, input_base, result)
                served = replayed["policies"]["served"]
                step["detail"] = (
                    f"served Recall@10 {served['recall']:.4f}, NDCG@10 {served['ndcg']:.4f} "
                    f"on {replayed['requests']} requests"
                )
        with ui.step("report") as step:
            result["report"] = str(report.write_report(config, result))
            step["detail"] = result["report"]
    if ui.failed:
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(local_runner.format_summary(result))
        if replayed is not None:
            from experiments.replay import format_report

            print(format_report(replayed))
        print(f"wall time: {result['wall_time_s']} s")
        print(f"report: {result['report']}")
        if result["log_file"]:
            print(f"full log: {result['log_file']}")
    return 0


def replay_pushed(config: PipelineConfig, input_base: str, result: dict) -> dict:
    """``lcron replay`` of the last eval day against the pair the run pushed; its figures
    (without the per-request values) go into ``result["replay"]``."""
    from experiments.config import ReplayConfig
    from experiments.replay import replay

    if not result.get("serving_manifest"):
        raise RuntimeError("--replay: nothing pushed yet, nothing to replay")
    replay_config = ReplayConfig(
        day=config.data.eval_days[-1], train_days=tuple(config.data.train_days)
    )
    report = replay(config.resolved_serving_dir, input_base, replay_config)
    result["replay"] = {k: v for k, v in report.items() if k != "policies"}
    result["replay"]["policies"] = {
        name: {m: v for m, v in metrics.items() if m != "per_request"}
        for name, metrics in report["policies"].items()
    }
    return report
