"""The ``lcron`` command line: one entry point, one subcommand per job.

Subcommand modules are imported only when their subcommand runs, so ``lcron --help`` stays fast
(importing TFX alone takes ~16 s). Each module exposes ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulator.cli", "write simulated RecFlow-schema logs (Parquet/CSV) for D days"),
    "ingest": ("components.recflow_example_gen.cli", "run the Beam ingestion standalone"),
    "convert-recflow": (
        "components.recflow_example_gen.convert_cli",
        "join a RecFlow download's pickled sequences into daily Parquet logs",
    ),
    "run": ("pipeline.run_command", "run the whole TFX pipeline locally (LocalDagRunner)"),
    "compile": ("pipeline.compile_command", "compile the pipeline for Vertex AI / Kubeflow"),
    "serve": ("serving.cli", "serve the cascade over HTTP (in process or via TF Serving)"),
    "experiment": ("experiments.cli", "compare loss methods on simulated logs or yours"),
    "replay": (
        "experiments.replay_cli",
        "replay a simulated day against the pushed pair, scored with the true affinity",
    ),
    "bench": ("pipeline.bench_command", "run a benchmark script from benchmarks/"),
    "config": (
        "pipeline.config_command",
        "show the resolved configuration and where each value came from",
    ),
}


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcron",
        description="Train a retrieval + ranking cascade as one network (LCRON) with TFX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    return parser


# google-api-core warns at every import that Python 3.10 will get no further updates; the stack
# is pinned to 3.10 on purpose. The environment variable carries the filter to worker processes
# (Beam, experiment workers).
_PY310_NOTICE = "You are using a non-supported Python version"


def _quiet_known_notices() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "PYTHONWARNINGS" not in os.environ:
        os.environ["PYTHONWARNINGS"] = f"ignore:{_PY310_NOTICE}:FutureWarning"
    warnings.filterwarnings("ignore", message=_PY310_NOTICE, category=FutureWarning)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_known_notices()
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in SUBCOMMANDS:
        selected = None
    parser = _build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
