"""``lcron ingest``: the ingestion's Beam job without TFX.

    lcron ingest --data logs/ --out ingested/                      # one split per day_* folder
    lcron ingest --data logs/ --out ingested/ --train-days 0 1 --eval-days 2
    lcron ingest --data recflow/ --out ingested/ --format feather \\
        --split train=all_stage/2024-01-1*.feather --split eval=all_stage/2024-01-20.feather
    lcron ingest --data recflow_parquet/ --out ingested/ --preset recflow --train-days 0 1 \
        --eval-days 2                                  # lcron convert-recflow's output
    lcron ingest ... --beam-arg=--runner=DataflowRunner --beam-arg=--project=...

Writes ``OUT/examples/Split-<name>/``, ``OUT/dead_letters/Split-<name>/`` and
``OUT/stats.json``, and prints the stats. Exits 1 (after writing them) when a split wrote no
example or dead-lettered more than ``--max-dead-letter-share`` of its rows, printing the top
reasons; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="input base: folder of daily logs")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--format", default="parquet", choices=("parquet", "csv", "feather"), help="log format"
    )
    parser.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=GLOBS",
        help="a split and its comma-separated globs relative to --data (repeatable)",
    )
    parser.add_argument("--train-days", type=int, nargs="+", help="days of the train split")
    parser.add_argument("--eval-days", type=int, nargs="+", help="days of the eval split")
    parser.add_argument("--list-size", type=int, default=40, help="candidates per example")
    parser.add_argument("--group-size", type=int, help="candidates per stage group")
    parser.add_argument(
        "--groups",
        help="stage groups, best first, comma-separated; the first is the ground truth"
        " (default rank_pos,rank_neg,coarse_neg,prerank_neg; the three-stage setting:"
        " rerank_pos,rerank_neg,rank_neg,coarse_neg,prerank_neg)",
    )
    parser.add_argument(
        "--label-mode", default="ground_truth", choices=("ground_truth", "feedback")
    )
    parser.add_argument(
        "--preset",
        default="default",
        choices=("default", "recflow"),
        help="input conventions: 'default' (ours: timestamps ms, duration s) or 'recflow'"
        " (upload_timestamp s, duration and playing_time ms, null positions allowed)",
    )
    parser.add_argument(
        "--time-unit",
        action="append",
        default=[],
        metavar="COLUMN=UNIT",
        help="unit (s, ms, us, ns) of a time column in the input, over the preset's (repeatable)",
    )
    parser.add_argument(
        "--max-dead-letter-share",
        type=float,
        default=0.01,
        help="fail when more than this share of a split's rows are malformed (default 0.01)",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="Beam pipeline arg, e.g. --beam-arg=--runner=DataflowRunner (repeatable; replaces"
        " the local default: DirectRunner, multi-processing)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="stream every log record (Beam) to stderr instead of OUT/logs/run-<timestamp>.log",
    )


def _split_patterns(args: argparse.Namespace) -> dict[str, str]:
    from components.recflow_example_gen import splits

    if args.split:
        patterns = {}
        for item in args.split:
            name, sep, globs = item.partition("=")
            if not sep or not name or not globs:
                raise ValueError(f"--split expects NAME=GLOBS, got {item!r}")
            patterns[name] = globs
        return patterns
    if args.train_days or args.eval_days:
        if not (args.train_days and args.eval_days):
            raise ValueError("--train-days and --eval-days go together")
        return splits.split_patterns(splits.day_splits(args.train_days, args.eval_days))
    days = sorted(p.name for p in Path(args.data).glob("day_*") if p.is_dir())
    if not days:
        raise ValueError(f"no day_* folder under {args.data}; name the splits with --split")
    return {day: f"{day}/*" for day in days}


def _time_units(items: list[str]) -> dict[str, str]:
    units = {}
    for item in items:
        column, sep, unit = item.partition("=")
        if not sep or not column or not unit:
            raise ValueError(f"--time-unit expects COLUMN=UNIT, got {item!r}")
        units[column] = unit
    return units


def run(args: argparse.Namespace) -> int:
    from components.recflow_example_gen import beam_pipeline, listwise, presets

    try:
        patterns = _split_patterns(args)
        overrides = {"time_units": _time_units(args.time_unit)} if args.time_unit else {}
        config = beam_pipeline.IngestConfig(
            input_format=args.format,
            list=listwise.ListConfig(
                list_size=args.list_size,
                group_size=args.group_size,
                label_mode=args.label_mode,
                **({"groups": tuple(args.groups.split(","))} if args.groups else {}),
            ),
            validation=presets.validation_config(args.preset, overrides),
            max_dead_letter_share=args.max_dead_letter_share,
        )
    except ValueError as err:
        print(f"lcron ingest: {err}", file=sys.stderr)
        return 2
    from pipeline import console

    # Status and a progress bar over the ingestion units on the terminal; Beam's own records go
    # to OUT/logs/run-<timestamp>.log. stdout carries only the stats (JSON).
    splits = f"{len(patterns)} splits from {args.data}"
    with (
        console.session("ingest", args.out, verbose=args.verbose) as ui,
        ui.step("ingestion", splits) as step,
    ):
        stats = beam_pipeline.run_ingestion(
            patterns,
            args.data,
            args.out,
            config,
            beam_pipeline_args=DEFAULT_BEAM_ARGS if args.beam_arg is None else args.beam_arg,
        )
        step["detail"] = (
            f"{stats['rows_read']:,} rows read, {stats['rows_dead_lettered']:,} dead-lettered,"
            f" {stats['requests_written']:,} requests written"
        )
    if ui.failed:
        stats_file = Path(args.out) / beam_pipeline.STATS_FILE
        if stats_file.exists():
            print(f"lcron ingest: counts in {stats_file}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in stats.items() if k != "splits"}, indent=2))
    return 0
