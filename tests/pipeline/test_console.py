"""The operator's console: step lines, progress bars, the log file, failures, usage errors.

Fast tests: no TensorFlow. The console of a real pipeline run is checked in
``test_pipeline_e2e.py`` (line count, log file with TFX records, report).
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from models import progress
from pipeline import console

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str, name: str = "absl") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("lcron-progress ingestion total=12", progress.Event("ingestion", total=12)),
        ("lcron-progress ingestion +1", progress.Event("ingestion", advance=1)),
        ("lcron-progress training 150/300", progress.Event("training", total=300, done=150)),
        # As Beam's DirectRunner forwards a worker process' record to the launching process.
        (
            'Worker: severity: INFO timestamp { seconds: 1 } message: "lcron-progress ingestion'
            ' +1" instruction_id: "bundle_5" transform_id: "Ingest[train]/ReadValidate"',
            progress.Event("ingestion", advance=1),
        ),
        ("Component Trainer is running.", None),
        ("lcron-progress ingestion", None),
    ],
)
def test_progress_records_parse(message: str, expected: progress.Event | None) -> None:
    assert progress.parse(message) == expected


def test_bar_rendering() -> None:
    assert console.render_bar("training", 15, 60, width=4) == "training [#---] 15/60 (25%)"
    assert console.render_bar("ingestion", 0, 3, width=3) == "ingestion [---] 0/3 (0%)"
    assert console.render_bar("x", 9, 3, width=2).startswith("x [##] 9/3")  # never past full


def _feed(stream: io.StringIO, messages: list[tuple[str, str]]) -> console.Console:
    ui = console.Console(stream, describe=lambda node: f"described {node}", steps=2)
    handler = console.ConsoleHandler(ui)
    for name, message in messages:
        handler.handle(_record(message, name))
    return ui


RUN = [
    ("absl", "Component RecFlowExampleGen is running."),
    ("absl", "Running launcher for node_info { id: 'RecFlowExampleGen' }"),  # ignored
    ("lcron.progress", "lcron-progress ingestion total=3"),
    ("apache_beam.runners.portability.local_job_service", 'message: "lcron-progress ingestion +1"'),
    ("apache_beam.runners.portability.local_job_service", 'message: "lcron-progress ingestion +1"'),
    ("absl", "Component RecFlowExampleGen is finished."),
    ("lcron.console", "a line for the operator"),
    ("absl", "Component Trainer is running."),
    ("lcron.progress", "lcron-progress training 30/60"),
    ("absl", "Component Trainer is finished."),
]


def test_console_lines_and_bars_on_a_terminal() -> None:
    terminal = _Terminal()
    ui = _feed(terminal, RUN)
    text = terminal.getvalue()
    assert "ingestion [" + "#" * 10 + "-" * 20 + "] 1/3 (33%)" in text
    assert "ingestion [" + "#" * 20 + "-" * 10 + "] 2/3 (67%)" in text
    assert "training [" + "#" * 15 + "-" * 15 + "] 30/60 (50%)" in text
    assert "\r\x1b[K" in text  # the bar is erased before the next line
    lines = [line.split("\r\x1b[K")[-1] for line in text.split("\n") if line]
    assert [line for line in lines if not line.startswith("  ")] == [
        "[1/2] RecFlowExampleGen ...",
        lines[1],
        "a line for the operator",
        "[2/2] Trainer ...",
        lines[4],
    ]
    assert lines[1].startswith("[1/2] RecFlowExampleGen done in ")
    assert lines[1].endswith(" s: described RecFlowExampleGen")
    assert lines[4].endswith(" s: described Trainer")
    assert ui.lines == 5


@pytest.mark.parametrize("stream", [io.StringIO(), _Terminal()], ids=["pipe", "terminal"])
def test_no_bars_in_a_file_or_pipe_nor_when_asked(stream: io.StringIO) -> None:
    # A pipe never gets bars; a terminal not when log records share it (--verbose).
    ui = console.Console(stream, describe=lambda node: f"described {node}", steps=2, bars=False)
    if not stream.isatty():
        ui = console.Console(stream, describe=lambda node: f"described {node}", steps=2)
    handler = console.ConsoleHandler(ui)
    for name, message in RUN:
        handler.handle(_record(message, name))
    text = stream.getvalue()
    assert "\r" not in text and "[#" not in text and "[-" not in text
    assert len(text.splitlines()) == 5


SESSION_SCRIPT = """
import logging, os, subprocess, sys
from pipeline import console
out, verbose = sys.argv[1], sys.argv[2] == "verbose"
with console.session("demo", out, verbose=verbose, steps=1) as ui:
    print("python print: noise")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child noise\\\\n')"])
    logging.getLogger("absl").info("Component Trainer is running.")
    logging.getLogger("tfx").info("a TFX record")
    raise ValueError("the Trainer broke: bad value in field x")
sys.exit(1 if ui.failed else 0)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_session_keeps_the_noise_in_the_log_and_reports_a_failure(
    tmp_path: Path, verbose: bool
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SESSION_SCRIPT, str(tmp_path), "verbose" if verbose else "quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "[1/1] Trainer failed after " in proc.stderr
    assert "ValueError: the Trainer broke: bad value in field x" in proc.stderr
    logs = list((tmp_path / "logs").glob("run-*.log"))
    if verbose:  # today's stream on stderr, no log file; stdout stays for the result
        assert logs == []
        for noise in ("python print: noise", "child noise", "a TFX record", "Traceback"):
            assert noise in proc.stderr
        assert proc.stdout == ""
        return
    (log,) = logs
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"lcron demo: full log in {log}",
        "[1/1] Trainer ...",
        proc.stderr.splitlines()[2],
        f"full log: {log}",
    ]
    text = log.read_text()
    for noise in ("python print: noise", "child noise", "a TFX record", "Traceback", "ValueError"):
        assert noise in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--set", "data.nope=1"], "nope"),
        (["run", "--set", "missing-equals"], "not key=value"),
        (["ingest", "--data", "x"], "the following arguments are required: --out"),
        (["simulate", "--out", "x"], "the following arguments are required"),
        (["experiment", "--config", "/nonexistent.json", "--out", "x"], "nonexistent"),
        (["serve", "--serving-dir", "x", "--max-batch", "0"], "--max-batch must be >= 1"),
        (["bench", "no_such_bench"], "no_such_bench"),
        (["compile", "--target", "airflow", "--out", "p.json"], "invalid choice: 'airflow'"),
        (["compile", "--target", "vertex", "--out", "p.json"], "output_dir='outputs'"),
        (["config", "show", "--set", "training.loss.tau=-1"], "training.loss.tau: must be > 0"),
        (["config"], "the following arguments are required: ACTION"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_every_subcommand_reports_usage_errors_on_stderr(
    argv: list[str], message: str, capsys
) -> None:
    from pipeline.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert captured.out == ""
