"""Progress records: how far a long step is, reported through Python logging.

Long steps (ingestion units, training steps) log one-line records on the ``lcron.progress``
logger; ``pipeline.console`` turns them into progress bars, and anywhere else (Airflow, Vertex,
``--verbose``) they are ordinary log lines. Logging is the one channel that reaches the console
from everywhere a step runs: TFX executors run in the ``lcron`` process, and Beam's portable
DirectRunner forwards its worker processes' log records to the launching process, keeping the
message text. Messages therefore carry everything in text::

    lcron-progress <task> total=<n>     the step has n units of work
    lcron-progress <task> +<n>          n more units are done (from any worker, any order)
    lcron-progress <task> <done>/<n>    absolute position (a single-process loop)
"""

from __future__ import annotations

import dataclasses
import logging
import re

LOGGER = logging.getLogger("lcron.progress")
MARK = "lcron-progress"

_EVENT = re.compile(
    rf"{MARK} (?P<task>[\w.-]+) "
    r"(?:total=(?P<total>\d+)|\+(?P<plus>\d+)|(?P<done>\d+)/(?P<of>\d+))"
)


@dataclasses.dataclass(frozen=True)
class Event:
    """One parsed progress record: set ``total``, add ``advance`` or set ``done``/``total``."""

    task: str
    total: int | None = None
    advance: int = 0
    done: int | None = None


def total(task: str, units: int) -> None:
    """Announces that ``task`` has ``units`` units of work."""
    LOGGER.info("%s %s total=%d", MARK, task, units)


def advance(task: str, units: int = 1) -> None:
    """Reports ``units`` more units of ``task`` done (safe from parallel workers)."""
    LOGGER.info("%s %s +%d", MARK, task, units)


def position(task: str, done: int, of: int) -> None:
    """Reports that ``done`` of ``of`` units of ``task`` are done."""
    LOGGER.info("%s %s %d/%d", MARK, task, done, of)


def parse(message: str) -> Event | None:
    """The progress event in a log message (also inside Beam's forwarded worker records)."""
    match = _EVENT.search(message)
    if not match:
        return None
    if match["total"] is not None:
        return Event(match["task"], total=int(match["total"]))
    if match["plus"] is not None:
        return Event(match["task"], advance=int(match["plus"]))
    return Event(match["task"], total=int(match["of"]), done=int(match["done"]))


def keras_callback(train_steps: int, task: str = "training", updates: int = 50):
    """A Keras callback reporting ``task`` every ~``train_steps / updates`` optimizer steps."""
    import tensorflow as tf

    every = max(1, train_steps // updates)

    class _TrainingProgress(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._steps = 0

        def on_train_begin(self, logs=None) -> None:
            position(task, 0, train_steps)

        def on_train_batch_end(self, batch, logs=None) -> None:
            self._steps += 1
            if self._steps % every == 0 or self._steps == train_steps:
                position(task, self._steps, train_steps)

    return _TrainingProgress()
