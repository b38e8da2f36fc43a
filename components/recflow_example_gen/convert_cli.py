"""``lcron convert-recflow``: a RecFlow download -> daily Parquet logs with behaviour sequences.

    lcron convert-recflow --allow-pickle /data/recflow /data/recflow_parquet
    lcron convert-recflow --allow-pickle --dates '2024-01-*' /data/recflow /data/recflow_jan

Reads ``IN/all_stage/DATE.feather`` and ``IN/seq_effective_50_dict/DATE.pkl``, writes
``OUT/day_NN/part-00000.parquet`` (``day_00`` = the first date) and ``OUT/days.json``; then
``lcron ingest --preset recflow`` / ``lcron run --set data.preset=recflow`` read ``OUT``. The
pickles are read only with ``--allow-pickle``, through an unpickler that admits dicts, lists,
ints and NumPy arrays and refuses anything else (a pickle can run code). Exit 0 when done, 1
when the download is refused (unsafe pickle, sequences that do not match), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("download", metavar="IN", help="RecFlow folder (all_stage/, seq_...)")
    parser.add_argument("out", metavar="OUT", help="empty output folder for day_NN/ Parquet")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read the pickled sequence dicts (restricted: dict/list/int/NumPy arrays only)",
    )
    parser.add_argument("--dates", default="*", help="glob over the dates, e.g. '2024-01-*'")
    parser.add_argument(
        "--max-missing-sequence-share",
        type=float,
        default=0.01,
        help="fail when more than this share of a day's requests have no sequence",
    )


def run(args: argparse.Namespace) -> int:
    from components.recflow_example_gen import recflow_convert, safe_pickle

    if not args.allow_pickle:
        print(
            "lcron convert-recflow: RecFlow keeps the behaviour sequences in pickles, and"
            " unpickling can run code. Pass --allow-pickle to read them with the restricted"
            " unpickler (dicts, lists, ints and NumPy arrays only; anything else is refused"
            " without being run).",
            file=sys.stderr,
        )
        return 2
    try:
        summary = recflow_convert.convert(
            args.download, args.out, args.dates, args.max_missing_sequence_share
        )
    except safe_pickle.UnsafePickleError as err:
        print(f"lcron convert-recflow: unsafe pickle refused: {err}", file=sys.stderr)
        return 1
    except recflow_convert.ConversionError as err:
        print(f"lcron convert-recflow: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
