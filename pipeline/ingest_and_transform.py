"""The pipeline's first components alone: ingestion, curated schema and Transform.

For work that trains many models on one day split without the rest of the pipeline (the method
comparison in ``experiments/``, benchmarks, tests): RecFlowExampleGen -> ImportSchemaGen ->
Transform on LocalDagRunner with SQLite ML Metadata, the same components and code as
``pipeline.pipeline.create_pipeline``.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import DataConfig


def _only(pattern: str) -> str:
    found = glob.glob(pattern)
    if len(found) != 1:
        raise RuntimeError(f"expected one artifact at {pattern}, found {found}")
    return found[0]


def ingest_and_transform(
    input_base: str | Path,
    out: str | Path,
    train_days: Sequence[int],
    eval_days: Sequence[int],
    *,
    data: DataConfig | None = None,
    beam_pipeline_args: Sequence[str] = (),
) -> dict[str, str]:
    """Runs the three components once into ``out``; returns the artifact folders.

    Args:
      input_base: folder of the daily logs.
      out: where the pipeline root and its ML Metadata go.
      train_days / eval_days: the days of the ``train`` and ``eval`` splits.
      data: the ingestion's options (format, day pattern, list size, label mode, ...) as
        ``lcron run`` reads them; None means the defaults (the simulator's Parquet days).
      beam_pipeline_args: passed to the Beam-powered components.

    Returns:
      {"examples": raw list-wise examples, "transformed_examples": Transform's output,
       "transform_graph": the Transform graph} (``Split-train`` / ``Split-eval`` inside).
    """
    from tfx import v1 as tfx

    from components.recflow_example_gen import RecFlowExampleGen, day_splits
    from components.recflow_example_gen import schema as schema_module
    from models.code_version import code_version

    data = data or DataConfig()
    out = Path(out)
    example_gen = RecFlowExampleGen(
        input_base=str(input_base),
        input_config=day_splits(train_days, eval_days, data.day_pattern),
        **data.example_gen_options(),
    ).with_id("RecFlowExampleGen")
    # The curated schema of this list shape (data/schema.pbtxt for the default 40 x 4 groups).
    schema_path = schema_module.schema_file(data.list_size, len(data.groups), out / "schema")
    schema = tfx.components.ImportSchemaGen(schema_file=schema_path).with_id("ImportSchemaGen")
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_version": code_version()},
    ).with_id("Transform")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="ingest-and-transform",
        pipeline_root=str(out / "root"),
        components=[example_gen, schema, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(out / "metadata.sqlite")
        ),
        beam_pipeline_args=list(beam_pipeline_args),
        enable_cache=False,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    root = out / "root"
    return {
        "examples": _only(f"{root}/RecFlowExampleGen/examples/*"),
        "transformed_examples": _only(f"{root}/Transform/transformed_examples/*"),
        "transform_graph": _only(f"{root}/Transform/transform_graph/*"),
    }
