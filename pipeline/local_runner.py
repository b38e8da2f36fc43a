"""Runs the pipeline on TFX's LocalDagRunner with SQLite ML Metadata (the local default)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data import DATA_DIR
from pipeline.config import PipelineConfig

SCHEMA_PATH = DATA_DIR / "schema.pbtxt"


def hyperparameters(config: PipelineConfig) -> dict[str, Any]:
    """The Trainer's custom_config sections from the typed configuration."""
    training = config.training
    return {
        "loss": dict(training.loss),
        "metrics": dict(training.metrics),
        "model": dict(training.model),
        "trainer": dict(training.trainer),
        "index": dict(training.index),
    }


def create_from_config(
    config: PipelineConfig,
    *,
    input_base: str,
    train_days: Sequence[int],
    eval_days: Sequence[int],
    metadata_connection_config: Any,
    schema_path: str = str(SCHEMA_PATH),
):
    """``create_pipeline`` with every other argument taken from ``config`` (all runners).

    ``schema_path`` is the curated schema as the components see it (another path inside a
    container image). A list shape other than the default's (40 candidates in four groups, e.g.
    the three-stage setting's 50 in five) gets its own generated schema, written under a local
    ``output_dir`` (``schema.schema_file``); elsewhere pass its path.
    """
    from components.recflow_example_gen import schema
    from pipeline.pipeline import create_pipeline

    shape = (config.data.list_size, len(config.data.groups))
    if schema_path == str(SCHEMA_PATH) and shape != (40, schema.NUM_GROUPS):
        if "://" in config.output_dir:
            raise ValueError(
                f"config: data.list_size / data.groups {shape} need their own schema; write it"
                " with `python -m components.recflow_example_gen.schema"
                f" {shape[0]} {shape[1]}` and pass its path"
            )
        schema_path = schema.schema_file(*shape, Path(config.output_dir) / "schema")

    return create_pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        input_base=input_base,
        schema_path=schema_path,
        serving_dir=config.resolved_serving_dir,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
        train_days=train_days,
        eval_days=eval_days,
        input_format=config.data.format,
        day_pattern=config.data.day_pattern,
        list_size=config.data.list_size,
        groups=config.data.groups,
        label_mode=config.data.label_mode,
        preset=config.data.preset,
        validation=dict(config.data.validation),
        max_dead_letter_share=config.data.max_dead_letter_share,
        stop_on_anomalies=config.data.stop_on_anomalies,
        hyperparameters=hyperparameters(config),
        warm_start=config.training.warm_start,
        recall_floor=config.evaluation.recall_floor,
        min_lift_over_chance=config.evaluation.min_lift_over_chance,
        max_regression=config.evaluation.max_regression,
        slice_features=config.evaluation.slice_features,
        min_index_recall=config.push.min_index_recall,
        warmup_requests=config.push.warmup_requests,
        enable_cache=config.enable_cache,
    )


def build(config: PipelineConfig, input_base: str):
    """The pipeline for ``config`` reading logs from ``input_base`` (SQLite MLMD)."""
    from tfx import v1 as tfx

    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    return create_from_config(
        config,
        input_base=input_base,
        train_days=config.data.train_days,
        eval_days=config.data.eval_days,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
    )


def run(config: PipelineConfig, input_base: str) -> None:
    """Runs the whole pipeline once, in this process."""
    from tfx import v1 as tfx

    logging.getLogger().setLevel(logging.INFO)
    tfx.orchestration.LocalDagRunner().run(build(config, input_base))


def _newest(component_dir: Path, name: str) -> Path | None:
    """The newest execution's output file of a component (execution ids grow)."""
    found = [p for p in component_dir.glob(f"*/*/{name}") if p.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def summary(config: PipelineConfig) -> dict[str, Any]:
    """Where the models went, the evaluation table and the blessing of the newest run."""
    root = Path(config.pipeline_root)
    result: dict[str, Any] = {"serving_dir": config.resolved_serving_dir}
    metrics_file = _newest(root / "CascadeEvaluator", "metrics.json")
    if metrics_file:
        report = json.loads(metrics_file.read_text())
        result.update(
            blessed=report["blessed"],
            reason=report["reason"],
            evaluation=report["candidate"],
            baseline=(report["baseline"] or {}).get("overall"),
        )
    manifest = Path(config.resolved_serving_dir) / "manifest.json"
    result["serving_manifest"] = json.loads(manifest.read_text()) if manifest.exists() else None
    stats_file = _newest(root / "RecFlowExampleGen", "stats.json")
    result["ingestion"] = json.loads(stats_file.read_text()) if stats_file else None
    return result


def format_summary(result: dict[str, Any]) -> str:
    lines = []
    evaluation = result.get("evaluation")
    if evaluation:
        names = list(evaluation["overall"])
        lines.append(f"evaluation on {evaluation['requests']} eval requests:")
        width = max(len(n) for n in names)
        lines.append("  " + " | ".join(["slice".ljust(14), *[n.rjust(width) for n in names]]))
        rows = [("overall", evaluation["overall"])]
        if "chance" in evaluation:  # constant scores on the same requests
            rows.append(("chance level", evaluation["chance"]))
        rows += list(evaluation["slices"].items())
        for label, values in rows:
            cells = [f"{values[n]:.4f}".rjust(width) for n in names]
            lines.append("  " + " | ".join([label.ljust(14), *cells]))
        if result.get("baseline"):
            lines.append(f"  last blessed model: {json.dumps(result['baseline'])}")
        lines.append(f"blessed: {result['blessed']} ({result['reason']})")
    manifest = result.get("serving_manifest")
    if manifest:
        lines.append(f"serving: version {manifest['version']} under {result['serving_dir']}")
        stages = manifest["stages"]
        for stage in manifest.get("order", list(stages)):  # the cascade's order (format 2)
            lines.append(f"  {stage}: {Path(result['serving_dir']) / stages[stage]['path']}")
    else:
        lines.append(f"serving: nothing pushed yet under {result['serving_dir']}")
    ingestion = result.get("ingestion")
    if ingestion:
        lines.append(
            f"ingestion: {ingestion['rows_read']:,} rows read, {ingestion['rows_in_examples']:,}"
            f" in examples, {ingestion['rows_dead_lettered']:,} dead-lettered,"
            f" {ingestion['rows_not_in_examples']:,} left out;"
            f" {ingestion['requests_written']:,} requests written"
        )
        reasons = sorted(ingestion.get("dead_letter_reasons", {}).items(), key=lambda kv: -kv[1])
        if reasons:
            top = ", ".join(f"{reason} {count:,}" for reason, count in reasons[:3])
            lines.append(f"  top dead-letter reasons: {top}")
    return "\n".join(lines)
