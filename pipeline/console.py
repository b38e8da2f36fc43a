"""The operator's console: one line per step, progress bars, the log file for everything else.

A pipeline run emits thousands of absl/TFX/Beam/TensorFlow log lines. ``session`` keeps the
terminal for what an operator reads and sends the rest to ``<out>/logs/run-<timestamp>.log``:

- one line when a step starts and one when it ends (name, wall time, what it produced); TFX
  components are recognised from the runner's own "Component X is running/finished" records;
- a progress bar while a step reports progress (``models.progress`` records: ingestion units,
  training steps), drawn only on a terminal;
- lines written to the ``lcron.console`` logger (``say``), e.g. the experiment's cells;
- on failure: the step, the error and the log file.

Quiet mode redirects the process' stdout and stderr file descriptors, so C++ logs, Keras'
epoch lines and child processes (Beam workers, experiment workers) land in the log file too,
and the command's own result (a summary, JSON) is written to the saved terminal streams
(``Session.stdout``). Status lines go to the terminal's stderr: ``lcron run --json | jq`` sees
only the JSON. ``verbose=True`` keeps today's stream: everything on stderr, status lines
included, and no log file.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from models import progress

CONSOLE_LOGGER = "lcron.console"
_COMPONENT = re.compile(r"^Component (?P<node>\S+) is (?P<what>running|finished)\.$")
_LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
BAR_WIDTH = 30


def say(message: str, *args: Any) -> None:
    """A line for the operator: on the terminal under ``session``, a log record elsewhere."""
    logging.getLogger(CONSOLE_LOGGER).info(message, *args)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def render_bar(task: str, done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``ingestion [##########----------]  12/24 (50%)``."""
    fraction = min(1.0, done / total) if total > 0 else 0.0
    filled = int(round(fraction * width))
    return f"{task} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} ({fraction:.0%})"


class Console:
    """Writes step lines and a transient progress bar to a terminal stream (thread-safe).

    Args:
      stream: where status lines go (the terminal's stderr).
      describe: node id -> what a finished TFX component produced ("" when nothing to say).
      steps: how many steps the run has (shown as ``[i/n]``), or None.
      bars: draw progress bars (on a terminal only; never where log records interleave).
    """

    def __init__(
        self,
        stream: TextIO,
        describe: Callable[[str], str] | None = None,
        steps: int | None = None,
        bars: bool = True,
    ) -> None:
        self._stream = stream
        self._describe = describe
        self._steps = steps
        self._started = 0
        self._lock = threading.RLock()
        self._is_tty = bars and bool(getattr(stream, "isatty", lambda: False)())
        self._bar_shown = False
        self._progress: dict[str, list[int | None]] = {}  # task -> [done, total]
        self.current: str | None = None  # the step that started last and has not ended
        self._step_started: dict[str, float] = {}
        self._step_numbers: dict[str, int] = {}
        self.lines = 0

    # --- lines -------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        with self._lock:
            self._clear_bar()
            self._stream.write(text + "\n")
            self._stream.flush()
            self.lines += text.count("\n") + 1
            self._draw_bar()

    def _label(self, name: str) -> str:
        number = self._step_numbers.get(name)
        if number is None or self._steps is None:
            return name
        return f"[{number}/{self._steps}] {name}"

    def start(self, name: str, detail: str = "") -> None:
        with self._lock:
            self._started += 1
            self._step_numbers[name] = self._started
            self._step_started[name] = time.monotonic()
            self.current = name
            self._progress.clear()
            self.line(f"{self._label(name)} ..." + (f" {detail}" if detail else ""))

    def end(self, name: str, detail: str = "") -> None:
        with self._lock:
            seconds = time.monotonic() - self._step_started.get(name, time.monotonic())
            self._clear_bar()
            self._progress.clear()
            if self.current == name:
                self.current = None
            text = f"{self._label(name)} done in {_duration(seconds)}"
            self.line(text + (f": {detail}" if detail else ""))

    def fail(self, error: BaseException, log_path: Path | None) -> None:
        with self._lock:
            step = self.current
            where = "failed"
            if step is not None:
                seconds = time.monotonic() - self._step_started.get(step, time.monotonic())
                where = f"{self._label(step)} failed after {_duration(seconds)}"
            message = str(error).strip().splitlines()
            first = message[0] if message else ""
            self.line(f"{where}: {type(error).__name__}: {first}"[:2000])
            if log_path is not None:
                self.line(f"full log: {log_path}")

    def step_ended(self, name: str) -> None:
        """A TFX component finished: its end line with what it produced."""
        detail = ""
        if self._describe is not None:
            try:
                detail = self._describe(name)
            except Exception as err:  # a summary must never fail the run
                logging.getLogger(__name__).warning("describing %s failed: %r", name, err)
        self.end(name, detail)

    # --- progress ------------------------------------------------------------------------------
    def progress(self, event: progress.Event) -> None:
        with self._lock:
            done, total = self._progress.setdefault(event.task, [0, None])
            if event.total is not None:
                total = event.total
            if event.done is not None:
                done = event.done
            done = (done or 0) + event.advance
            self._progress = {event.task: [done, total]}  # the bar follows the latest task
            self._clear_bar()
            self._draw_bar()

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._bar_shown = False

    def _draw_bar(self) -> None:
        # Only a terminal gets the bar: in a file or a pipe every redraw would be a line.
        if not self._is_tty or not self._progress:
            return
        ((task, (done, total)),) = self._progress.items()
        if total:
            self._stream.write("  " + render_bar(task, int(done or 0), int(total)))
            self._stream.flush()
            self._bar_shown = True


class ConsoleHandler(logging.Handler):
    """Turns log records into console lines: TFX component start/end, progress records and
    ``say`` lines; ignores every other record."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name == CONSOLE_LOGGER:
                self.console.line(message)
                return
            if progress.MARK in message:
                event = progress.parse(message)
                if event is not None:
                    self.console.progress(event)
                return
            match = _COMPONENT.match(message)
            if match:
                if match["what"] == "running":
                    self.console.start(match["node"])
                else:
                    self.console.step_ended(match["node"])
        except Exception:  # logging must not raise into the pipeline
            self.handleError(record)


class Session:
    """What ``session`` yields: the console, the terminal streams and the log file."""

    def __init__(self, console: Console, stdout: TextIO, log_path: Path | None) -> None:
        self.console = console
        self.stdout = stdout  # the terminal's stdout while the session lasts
        self.log_path = log_path
        self.failed = False

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[dict[str, str]]:
        """A step that is not a TFX component; set ``result["detail"]`` for its end line."""
        result: dict[str, str] = {}
        self.console.start(name, detail)
        yield result
        self.console.end(name, result.get("detail", ""))


def log_file_path(out_dir: str | Path) -> Path:
    """``<out>/logs/run-<UTC timestamp>.log`` (a new name per run)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return Path(out_dir) / "logs" / f"run-{stamp}.log"


@contextlib.contextmanager
def session(
    command: str,
    out_dir: str | Path,
    *,
    verbose: bool = False,
    describe: Callable[[str], str] | None = None,
    steps: int | None = None,
) -> Iterator[Session]:
    """Runs the body with the console set up; a failure is reported, not raised.

    After the block, ``Session.failed`` tells whether the body raised (the error, the step
    and the log file were printed; the traceback is in the log file). KeyboardInterrupt and
    SystemExit propagate after the streams are restored. Whatever the mode, the process'
    stdout is kept for the command's result: noise written there during the block goes to the
    log file (quiet) or to stderr (verbose).

    Args:
      command: the subcommand's name (``lcron <command>``), for the first line.
      out_dir: the log file goes under ``<out_dir>/logs/``.
      verbose: keep the full stream on stderr, write no log file, draw no progress bar.
      describe: node id -> end-line detail of a finished TFX component.
      steps: total number of steps, for ``[i/n]`` labels.
    """
    from absl import logging as absl_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    # TFX announces components through absl at INFO. absl's verbosity flag defaults to WARNING
    # and TensorFlow's SavedModel export re-applies it to the "absl" logger (it saves and
    # restores the verbosity around attribute scans), which would silence every absl INFO
    # record after the Trainer's export.
    saved_verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_out = open(os.dup(1), "w", buffering=1)  # noqa: SIM115
    terminal_err = open(os.dup(2), "w", buffering=1)  # noqa: SIM115
    log_path = None if verbose else log_file_path(out_dir)
    if log_path is None:
        sink = None
        console = Console(terminal_err, describe, steps, bars=False)
        records = logging.StreamHandler(sys.stderr)
    else:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log_path, "a", buffering=1)  # noqa: SIM115
        console = Console(terminal_err, describe, steps)
        records = logging.StreamHandler(sink)
    records.setFormatter(logging.Formatter(_LOG_FORMAT))
    root.handlers = [records, ConsoleHandler(console)]
    root.setLevel(logging.INFO)
    # From here on, anything written to fd 1 (and, quiet, fd 2) by print, C++ logs or child
    # processes (Beam workers, experiment workers) goes to the log file, or to stderr.
    os.dup2(sink.fileno() if sink else 2, 1)
    if sink:
        os.dup2(sink.fileno(), 2)
        console.line(f"lcron {command}: full log in {log_path}")
    current = Session(console, terminal_out, log_path)
    try:
        yield current
    except Exception as err:
        current.failed = True
        logging.getLogger(__name__).exception("lcron %s failed", command)
        console.fail(err, log_path)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(terminal_out.fileno(), 1)
        os.dup2(terminal_err.fileno(), 2)
        root.handlers, root.level = saved_handlers, saved_level
        absl_logging.set_verbosity(saved_verbosity)
        for stream in (terminal_out, terminal_err, sink):
            if stream is not None:
                stream.close()
