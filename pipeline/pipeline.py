"""The LCRON cascade pipeline: wiring only.

``create_pipeline`` takes every path, the ML Metadata connection and the Beam args as
parameters; runners (``local_runner``, ``airflow_dag``, the notebook) own where and how it runs.
Every node has a stable id so that caching, lineage and the Airflow task graph stay put.

    RecFlowExampleGen -> StatisticsGen -> ExampleValidator <- ImportSchemaGen
           |                                   | (anomalies stop the run)
           |                                   Transform <-------/
           |                                       |
           |              latest blessed model -> Trainer (both stages, one network)
           +----------------------------------> CascadeEvaluator -> CascadePusher (both stages)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfx import v1 as tfx

from components.cascade_evaluator.component import CascadeEvaluator
from components.cascade_pusher.component import CascadePusher
from components.example_validation.component import StrictExampleValidator
from components.recflow_example_gen import RecFlowExampleGen, day_splits
from models.code_version import code_version


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    input_base: str,
    schema_path: str,
    serving_dir: str,
    metadata_connection_config: Any | None,
    beam_pipeline_args: Sequence[str],
    train_days: Sequence[int],
    eval_days: Sequence[int],
    input_format: str = "parquet",
    day_pattern: str = "day_{day:02d}/*",
    list_size: int = 40,
    groups: Sequence[str] | None = None,
    label_mode: str = "ground_truth",
    preset: str = "default",
    validation: dict[str, Any] | None = None,
    max_dead_letter_share: float = 0.01,
    stop_on_anomalies: bool = True,
    hyperparameters: dict[str, Any] | None = None,
    warm_start: bool = False,
    recall_floor: float = 0.5,
    min_lift_over_chance: float = 0.1,
    max_regression: float = 0.01,
    slice_features: Sequence[str] = ("gender",),
    min_index_recall: float = 0.95,
    warmup_requests: int = 32,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: name in ML Metadata (and the Airflow DAG id).
      pipeline_root: where artifacts are written.
      input_base: folder of daily log folders (``day_00/`` ...).
      schema_path: curated schema of the list-wise examples (``data/schema.pbtxt``).
      serving_dir: TF Serving model base the pair is pushed to.
      metadata_connection_config: ML Metadata connection (SQLite locally); None lets the
        orchestrator provide it (Airflow/Kubeflow).
      beam_pipeline_args: passed unchanged to every Beam-powered component.
      train_days / eval_days: day folders of the ``train`` and ``eval`` splits.
      input_format: "parquet", "csv" or "feather".
      day_pattern: glob of one day's files under ``input_base``, with ``{day}`` (e.g.
        ``"all_stage/2024-01-{day:02d}.feather"`` for a RecFlow download).
      list_size: candidates per request in the list-wise example.
      groups: its stage groups, best first, the first the ground truth (None: rank_pos,
        rank_neg, coarse_neg, prerank_neg; ``listwise.ListConfig.groups``).
      label_mode: "ground_truth" or "feedback".
      preset / validation: the input's conventions (``presets.PRESETS`` by name, then
        ``rows.ValidationConfig`` fields over them: time units, bounds).
      max_dead_letter_share: the ingestion fails above this share of malformed rows in a split
        (and on an empty split).
      stop_on_anomalies: ExampleValidator fails the run (before Transform) on anomalies; False
        records them only.
      hyperparameters: ``{"loss": ..., "metrics": ..., "model": ..., "trainer": ...,
        "index": ...}`` dicts of the ``models.config`` dataclasses, handed to the Trainer
        through custom_config.
      warm_start: start training from the latest blessed model.
      recall_floor / min_lift_over_chance / max_regression: the blessing rule (see
        ``CascadeEvaluator``).
      slice_features: context features the evaluation is sliced by.
      min_index_recall: the pusher refuses a retrieval index whose recall@K against brute force
        (measured at export) is below this.
      warmup_requests: eval requests written as TF Serving warmup records.
      enable_cache: reuse results of unchanged components.
    """
    hyperparameters = dict(hyperparameters or {})
    # Dotted run_fn/preprocessing_fn do not change when their code does: the version of models/
    # in custom_config makes TFX re-run Transform and Trainer after a code edit.
    version = code_version()

    example_gen = RecFlowExampleGen(
        input_base=input_base,
        input_config=day_splits(train_days, eval_days, day_pattern),
        input_format=input_format,
        list_size=list_size,
        groups=groups,
        label_mode=label_mode,
        preset=preset,
        validation=validation,
        max_dead_letter_share=max_dead_letter_share,
    ).with_id("RecFlowExampleGen")

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"]).with_id(
        "StatisticsGen"
    )
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path).with_id("ImportSchemaGen")
    validator_class = (
        StrictExampleValidator if stop_on_anomalies else tfx.components.ExampleValidator
    )
    example_validator = validator_class(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    ).with_id("ExampleValidator")

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        custom_config={"code_version": version},
    ).with_id("Transform")
    if stop_on_anomalies:
        # Transform reads no output of the validator: order them explicitly.
        transform.add_upstream_node(example_validator)

    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("LatestBlessedModelResolver")

    trainer = tfx.components.Trainer(
        run_fn="models.trainer.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=latest_blessed.outputs["model"] if warm_start else None,
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={**hyperparameters, "code_version": version, "warm_start": warm_start},
    ).with_id("Trainer")

    evaluator = CascadeEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"],
        eval_split="eval",
        recall_floor=recall_floor,
        min_lift_over_chance=min_lift_over_chance,
        max_regression=max_regression,
        slice_features=slice_features,
        metric_config=hyperparameters.get("metrics"),
        # The Trainer's stages (ModelConfig.stages): the evaluator scores each one's export.
        stages=(hyperparameters.get("model") or {}).get("stages"),
    ).with_id("CascadeEvaluator")

    pusher = CascadePusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"],
        serving_dir=serving_dir,
        eval_split="eval",
        warmup_requests=warmup_requests,
        min_index_recall=min_index_recall,
    ).with_id("CascadePusher")

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            transform,
            latest_blessed,
            trainer,
            evaluator,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )
