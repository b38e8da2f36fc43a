"""RecFlowExampleGen: Beam ingestion of RecFlow-schema logs into list-wise tf.Examples.

Modules: ``rows`` (read + validate), ``listwise`` (one example per request), ``beam_pipeline``
(the Beam job, also standalone), ``splits`` (days -> splits), ``component`` / ``executor`` /
``driver`` (the TFX component), ``cli`` (``lcron ingest``), ``schema`` (the curated schema).

``RecFlowExampleGen`` and ``day_splits`` are imported lazily: importing TFX takes seconds and
the pure-Python parts (and ``lcron --help``) must not pay for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RecFlowExampleGen", "day_splits"]


def __getattr__(name: str) -> Any:
    if name == "RecFlowExampleGen":
        from components.recflow_example_gen.component import RecFlowExampleGen

        return RecFlowExampleGen
    if name == "day_splits":
        from components.recflow_example_gen.splits import day_splits

        return day_splits
    raise AttributeError(name)
