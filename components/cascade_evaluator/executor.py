"""Executor of CascadeEvaluator: scores the eval split with candidate and baseline, blesses."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.cascade_evaluator import evaluation
from models.config import MetricConfig, parse_stages

HEADLINE = evaluation.HEADLINE


class Executor(base_executor.BaseExecutor):
    def Do(  # noqa: N802 (TFX's executor interface)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        baselines = input_dict.get("baseline_model") or []
        evaluation_out = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing_out = artifact_utils.get_single_instance(output_dict["blessing"])

        config = MetricConfig.from_dict(json.loads(exec_properties["metric_config"]))
        # The cascade (``ModelConfig.stages``, the Trainer's); absent: the default two stages.
        stages = parse_stages(json.loads(exec_properties.get("stages") or "[]")) or None
        slices = json.loads(exec_properties["slice_features"])
        files = evaluation.split_files(examples.uri, exec_properties["eval_split"])

        report = evaluation.evaluate(
            evaluation.stage_export_dirs(model.uri, stages), files, config, slices, stages=stages
        )
        baseline_report = None
        if baselines and baselines[0].id != model.id:
            baseline_report = evaluation.evaluate(
                evaluation.stage_export_dirs(baselines[0].uri, stages),
                files,
                config,
                slices,
                stages=stages,
            )
        decision = evaluation.decide_blessing(
            report["overall"][HEADLINE],
            None if baseline_report is None else baseline_report["overall"][HEADLINE],
            floor=exec_properties["recall_floor"],
            max_regression=exec_properties["max_regression"],
            chance=report["chance"][HEADLINE],
            min_lift=exec_properties["min_lift_over_chance"],
        )
        payload = {
            "candidate": report,
            "baseline": baseline_report,
            "blessed": decision.blessed,
            "reason": decision.reason,
            "headline_metric": HEADLINE,
            "config": config.to_dict(),
            "stages": [s.to_dict() for s in (stages or evaluation.DEFAULT_STAGES)],
        }
        evaluation.write_json(Path(evaluation_out.uri) / "metrics.json", payload)
        logging.info("cascade evaluation: %s", json.dumps(report["overall"]))
        logging.info("blessing: %s (%s)", decision.blessed, decision.reason)

        # What LatestBlessedModelStrategy and TFX's Pusher read.
        Path(blessing_out.uri).mkdir(parents=True, exist_ok=True)
        marker = "BLESSED" if decision.blessed else "NOT_BLESSED"
        (Path(blessing_out.uri) / marker).write_text(decision.reason)
        blessing_out.set_int_custom_property("blessed", int(decision.blessed))
        blessing_out.set_int_custom_property("current_model_id", model.id)
        blessing_out.set_string_custom_property("current_model", model.uri)
        blessing_out.set_string_custom_property("reason", decision.reason)
        if baseline_report is not None:
            blessing_out.set_int_custom_property("baseline_model_id", baselines[0].id)
            blessing_out.set_string_custom_property("baseline_model", baselines[0].uri)
