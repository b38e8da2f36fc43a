"""StrictExampleValidator: ``tfx.components.ExampleValidator`` that fails on anomalies.

Same inputs, outputs and artifact (``anomalies``) as TFX's ExampleValidator; the executor
raises once the anomalies are written. Wire Transform after it (``add_upstream_node``) so that
an anomaly stops the run before any example is transformed.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.example_validation import executor


class StrictExampleValidator(tfx.components.ExampleValidator):
    """ExampleValidator whose run fails when a validated split has anomalies."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
