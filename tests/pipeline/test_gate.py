"""The blessing gate on real artifacts: CascadeEvaluator's executor (the pipeline's component
code) scores exported SavedModels on the raw eval split of the shared simulated log.

- a collapsed model (every candidate the same score) scores exactly chance level and is not
  blessed;
- a model trained on shuffled labels (each request's labels permuted among its candidates:
  the features carry no information about them) scores near chance level (its architecture's
  prior only) and is not blessed;
- the trained model is blessed, and the Keras metrics logged on the eval split during training
  equal the evaluator's figures for the exported models (one implementation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

RULE = {"recall_floor": 0.3, "max_regression": 0.01, "min_lift_over_chance": 0.1}


def _artifact(kind: str, uri: Path, **props):
    from tfx.types import standard_artifacts

    artifact = getattr(standard_artifacts, kind)()
    artifact.uri = str(uri)
    artifact.id = props.pop("id", 1)
    for key, value in props.items():
        setattr(artifact, key, value)
    return artifact


def _evaluate(raw_examples: str, model_dir: Path, out: Path) -> dict:
    """Runs CascadeEvaluator's executor; returns its metrics.json and blessing."""
    from components.cascade_evaluator.executor import Executor

    examples = _artifact("Examples", Path(raw_examples), split_names='["train", "eval"]')
    model = _artifact("Model", model_dir, id=7)
    evaluation = _artifact("ModelEvaluation", out / "evaluation")
    blessing = _artifact("ModelBlessing", out / "blessing")
    Executor().Do(
        {"examples": [examples], "model": [model]},
        {"evaluation": [evaluation], "blessing": [blessing]},
        {
            "eval_split": "eval",
            "slice_features": json.dumps(["gender"]),
            "metric_config": "{}",
            **RULE,
        },
    )
    report = json.loads((out / "evaluation" / "metrics.json").read_text())
    report["blessing_property"] = blessing.get_int_custom_property("blessed")
    report["marker"] = sorted(p.name for p in (out / "blessing").iterdir())
    return report


def _constant_model(root: Path, list_size: int = 40) -> Path:
    """Both stages as SavedModels that give every candidate the score 0.7."""
    import tensorflow as tf

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, examples):
            spec = {"mask": tf.io.FixedLenFeature([list_size], tf.int64)}
            mask = tf.io.parse_example(examples, spec)["mask"]
            return {"scores": tf.fill(tf.shape(mask), 0.7)}

    for stage in ("retrieval", "ranking"):
        module = Constant()
        path = root / "Format-Serving" / stage
        tf.saved_model.save(module, str(path), signatures={"serving_tf_example": module.serve})
    return root


def _shuffle_labels(transformed: str, out: Path, seed: int = 0) -> Path:
    """A copy of the transformed examples with each request's labels permuted among its valid
    candidates."""
    import tensorflow as tf

    from models import features

    label = features.transformed_name(features.LABEL)
    mask = features.transformed_name(features.MASK)
    rng = np.random.default_rng(seed)
    for split in ("train", "eval"):
        target = out / f"Split-{split}"
        target.mkdir(parents=True)
        files = sorted(str(p) for p in (Path(transformed) / f"Split-{split}").glob("*"))
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        with tf.io.TFRecordWriter(str(target / "shuffled.gz"), options) as writer:
            for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
                example = tf.train.Example.FromString(record.numpy())
                values = np.array(example.features.feature[label].float_list.value)
                valid = np.flatnonzero(np.array(example.features.feature[mask].int64_list.value))
                values[valid] = rng.permutation(values[valid])
                del example.features.feature[label].float_list.value[:]
                example.features.feature[label].float_list.value.extend(values.tolist())
                writer.write(example.SerializeToString())
    return out


@pytest.fixture(scope="module")
def gate(transformed_log, train_cascade, tmp_path_factory) -> dict:
    from tfx.components.trainer.fn_args_utils import FnArgs

    from models import trainer

    tmp = tmp_path_factory.mktemp("gate")
    raw = transformed_log["examples"]
    trained = train_cascade()  # shared with the trainer tests
    result = {"trained": trained}
    good_root = Path(trained.export_dirs["retrieval"]).parent.parent
    result["good"] = _evaluate(raw, good_root, tmp / "good")
    result["constant"] = _evaluate(raw, _constant_model(tmp / "constant"), tmp / "constant")

    shuffled = _shuffle_labels(transformed_log["transformed_examples"], tmp / "shuffled_examples")
    model_root = tmp / "shuffled_model"
    trainer.train_and_export(
        FnArgs(
            train_files=[f"{shuffled}/Split-train/*"],
            eval_files=[f"{shuffled}/Split-eval/*"],
            transform_output=transformed_log["transform_graph"],
            serving_model_dir=str(model_root / "Format-Serving"),
            model_run_dir=str(model_root / "model_run"),
            custom_config={
                "trainer": {"train_steps": 150, "steps_per_epoch": 150, "batch_size": 64}
            },
        )
    )
    result["shuffled"] = _evaluate(raw, model_root, tmp / "shuffled")
    return result


HEADLINE = "end_to_end_recall"


def test_the_trained_model_is_blessed_well_above_chance(gate) -> None:
    good = gate["good"]
    assert good["blessed"] is True, good["reason"]
    assert good["marker"] == ["BLESSED"] and good["blessing_property"] == 1
    overall, chance = good["candidate"]["overall"], good["candidate"]["chance"]
    assert overall[HEADLINE] > chance[HEADLINE] + 0.15, (overall, chance)


def test_a_constant_score_model_scores_exactly_chance_and_is_not_blessed(gate) -> None:
    constant = gate["constant"]
    overall, chance = constant["candidate"]["overall"], constant["candidate"]["chance"]
    for name, value in chance.items():
        assert overall[name] == pytest.approx(value, abs=1e-6), name
    # The simulated lists hold 40 candidates, some fewer: keep 30 then 20 gives >= 0.5.
    assert 0.5 <= overall[HEADLINE] < 0.6
    assert overall["retrieval_kendall_tau"] == 0.0
    assert constant["blessed"] is False and constant["marker"] == ["NOT_BLESSED"]
    assert "chance level" in constant["reason"]
    assert constant["blessing_property"] == 0


def test_a_model_trained_on_shuffled_labels_scores_near_chance_and_is_not_blessed(gate) -> None:
    shuffled = gate["shuffled"]
    overall, chance = shuffled["candidate"]["overall"], shuffled["candidate"]["chance"]
    good = gate["good"]["candidate"]["overall"]
    # Without label information a model keeps only its architecture's prior: measured
    # 0.552-0.585 over 5 seeds against chance 0.5 (trained: > 0.8). Not blessed: the lift over
    # chance asked for is 0.1.
    assert abs(overall[HEADLINE] - chance[HEADLINE]) < 0.1, (overall, chance)
    assert overall[HEADLINE] < good[HEADLINE] - 0.15, (overall, good)
    assert shuffled["blessed"] is False, shuffled["reason"]
    assert "chance level" in shuffled["reason"]


def test_keras_metrics_logged_in_training_equal_the_evaluators(gate) -> None:
    # The eval-split figures Keras logged after the last epoch (in-memory model, transformed
    # examples) and the evaluator's (exported SavedModels, raw examples): the same metrics
    # with the same averaging, up to float differences between the two graphs' scores.
    history = gate["trained"].history
    evaluator = gate["good"]["candidate"]["overall"]
    names = {HEADLINE: "val_recall_at_10_at_30_at_20"}
    names.update({name: f"val_{name}" for name in evaluator if name != HEADLINE})
    assert len(evaluator) == 7
    for ours, keras in names.items():
        assert history[keras][-1] == pytest.approx(evaluator[ours], abs=2e-3), (ours, keras)
