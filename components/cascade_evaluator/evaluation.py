"""Offline evaluation of a trained cascade as it will be served, and the blessing rule.

The cascade's stages come from ``ModelConfig.stages`` (two by default: retrieval, ranking; any
N by configuration). Every stage's exported SavedModel scores every logged candidate of each
eval request through its ``serving_tf_example`` signature (raw features in, the Transform graph
inside), so the figures are those of the artifacts that would be pushed, not of the in-memory
Keras model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import features
from models.config import DEFAULT_STAGES, MetricConfig, StageConfig

# The default cascade's stage names.
STAGES: tuple[str, ...] = tuple(s.name for s in DEFAULT_STAGES)


def stage_names(stages: Sequence[StageConfig] | None = None) -> tuple[str, ...]:
    """The cascade's stage names in order (None: the default two stages)."""
    return tuple(s.name for s in (stages or DEFAULT_STAGES))


def stage_export_dirs(
    model_uri: str | Path, stages: Sequence[StageConfig] | None = None
) -> dict[str, Path]:
    """Stage name -> SavedModel folder inside a Trainer ``Model`` artifact, in cascade order.

    The Trainer exports each stage under ``Format-Serving/<stage name>`` (TFX's
    serving_model_dir).
    """
    root = Path(model_uri)
    names = stage_names(stages)
    for base in (root / "Format-Serving", root):
        dirs = {stage: base / stage for stage in names}
        if all((d / "saved_model.pb").exists() for d in dirs.values()):
            return dirs
    raise FileNotFoundError(f"no SavedModels of the stages {list(names)} under {root}")


def split_files(examples_uri: str | Path, split: str) -> list[str]:
    """TFRecord files of one split of an ``Examples`` artifact."""
    files = sorted(str(p) for p in (Path(examples_uri) / f"Split-{split}").glob("*"))
    if not files:
        raise FileNotFoundError(f"no files for split {split!r} under {examples_uri}")
    return files


def _batches(files: Sequence[str], batch_size: int) -> Iterator[list[bytes]]:
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(batch_size)
    for batch in dataset.as_numpy_iterator():
        yield list(batch)


def _parse(batch: list[bytes], slice_features: Sequence[str]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    first = tf.train.Example.FromString(batch[0]).features.feature
    list_size = len(first[features.MASK].int64_list.value)
    spec = {
        features.LABEL: tf.io.FixedLenFeature([list_size], tf.float32),
        features.MASK: tf.io.FixedLenFeature([list_size], tf.int64),
        **{name: tf.io.FixedLenFeature([1], tf.int64) for name in slice_features},
    }
    parsed = tf.io.parse_example(tf.constant(batch), spec)
    return {k: v.numpy() for k, v in parsed.items()}


def score_requests(
    export_dirs: dict[str, Path],
    files: Sequence[str],
    slice_features: Sequence[str] = (),
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Scores every eval request with every stage.

    Returns:
      One [requests, list_size] score array per stage (keyed by stage name), ``label``,
      ``mask`` and one [requests] array per slice feature.
    """
    import tensorflow as tf

    from serving import custom_ops

    models = {}
    for stage, path in export_dirs.items():
        custom_ops.load_for(path)  # a ScaNN index's ops, before the graph that uses them
        models[stage] = tf.saved_model.load(str(path))
    out: dict[str, list[np.ndarray]] = {}
    for batch in _batches(files, batch_size):
        parsed = _parse(batch, slice_features)
        for key, value in parsed.items():
            out.setdefault(key, []).append(value.reshape(len(batch), -1))
        examples = tf.constant(batch)
        for stage, model in models.items():
            result = model.signatures["serving_tf_example"](examples=examples)
            out.setdefault(stage, []).append(result["scores"].numpy())
    if not out:
        raise ValueError("the eval split holds no request")
    merged = {k: np.concatenate(v, axis=0) for k, v in out.items()}
    for name in slice_features:
        merged[name] = merged[name][:, 0]
    return merged


HEADLINE = "end_to_end_recall"
# Rows per metric update: the metrics compare every pair of candidates ([rows, L, L]).
METRIC_BATCH = 1024


def cascade_metrics(
    scored: dict[str, np.ndarray],
    config: MetricConfig,
    stages: Sequence[StageConfig] | None = None,
) -> dict[str, float]:
    """Means over requests of the paper's cascade metrics: the Keras metrics the Trainer logs
    (``models.metrics.from_config``), so training curves and blessing figures are one
    computation with one averaging rule.

    ``end_to_end_recall`` is Recall@gt@k1@...@kN (the first stage keeps its top-k1 of the
    logged list, each later stage its top-k of what the previous kept); per stage Recall@gt@k,
    NDCG@k and Kendall's tau. Ties count in expectation (``models.metrics.functions``).

    Args:
      scored: ``score_requests``' output (one score array per stage name).
      config: gt_num and ndcg_k.
      stages: the cascade (``ModelConfig.stages``); None: the default two stages.
    """
    from models import metrics

    stages = tuple(stages or DEFAULT_STAGES)
    missing = [s.name for s in stages if s.name not in scored]
    if missing:
        raise ValueError(f"cascade_metrics: no scores of the stages {missing}")
    built = metrics.from_config(config, stages)
    labels, mask = scored[features.LABEL], scored[features.MASK]
    for start in range(0, len(labels), METRIC_BATCH):
        rows = slice(start, start + METRIC_BATCH)
        metrics.update_cascade_metrics(
            built, labels[rows], {s.name: scored[s.name][rows] for s in stages}, mask[rows]
        )
    return {
        (HEADLINE if role == "cascade_recall" else metric.name): float(metric.result().numpy())
        for role, metric in built.items()
    }


def chance_metrics(
    scored: dict[str, np.ndarray],
    config: MetricConfig,
    stages: Sequence[StageConfig] | None = None,
) -> dict[str, float]:
    """The metrics of an uninformative cascade (every score equal) on the same requests.

    With ties counted in expectation this is exactly chance level: end-to-end recall
    k_N / n for full lists of n (0.5 for 40 keeping 30 then 20; 0.4 for 50 keeping 40, 30,
    20), more for shorter lists. The blessing asks for a lift over it.
    """
    names = stage_names(stages)
    constant = {k: v for k, v in scored.items() if k not in names}
    for stage in names:
        constant[stage] = np.zeros_like(scored[stage])
    return cascade_metrics(constant, config, stages)


def evaluate(
    export_dirs: dict[str, Path],
    files: Sequence[str],
    config: MetricConfig,
    slice_features: Sequence[str] = (),
    batch_size: int = 256,
    stages: Sequence[StageConfig] | None = None,
) -> dict[str, Any]:
    """Overall and per-slice metrics of one exported cascade on the given examples."""
    scored = score_requests(export_dirs, files, slice_features, batch_size)
    return report_scores(scored, config, slice_features, stages)


def report_scores(
    scored: dict[str, np.ndarray],
    config: MetricConfig,
    slice_features: Sequence[str] = (),
    stages: Sequence[StageConfig] | None = None,
) -> dict[str, Any]:
    """``evaluate``'s report from scored requests (``score_requests``' output).

    Returns:
      {"requests": n, "overall": {metric: value}, "chance": the same metrics for constant
      scores on the same requests, "slices": {"<feature>=<value>": {"requests": n, metric:
      value, ..., "chance_end_to_end_recall": ...}}}.
    """
    report: dict[str, Any] = {
        "requests": int(scored[features.MASK].shape[0]),
        "overall": cascade_metrics(scored, config, stages),
        "chance": chance_metrics(scored, config, stages),
        "slices": {},
    }
    for name in slice_features:
        for value in np.unique(scored[name]):
            rows = scored[name] == value
            subset = {k: v[rows] for k, v in scored.items()}
            report["slices"][f"{name}={int(value)}"] = {
                "requests": int(rows.sum()),
                **cascade_metrics(subset, config, stages),
                f"chance_{HEADLINE}": chance_metrics(subset, config, stages)[HEADLINE],
            }
    return report


@dataclasses.dataclass(frozen=True)
class BlessingDecision:
    blessed: bool
    reason: str


def decide_blessing(
    candidate: float,
    baseline: float | None,
    *,
    floor: float,
    max_regression: float,
    chance: float | None,
    min_lift: float,
) -> BlessingDecision:
    """Blessed iff the candidate's headline recall

    - is finite and at least ``floor`` (absolute);
    - beats ``chance`` (the recall of an uninformative cascade on the same requests; None only
      where it is unknown) by at least ``min_lift``: a collapsed model (constant scores)
      scores exactly chance level; a model that learned nothing about the labels (trained on
      shuffled labels) only its architecture's prior above it (a few points);
    - is not worse than the baseline (the last blessed model, on the same requests) by more than
      ``max_regression`` (absolute). With no baseline (first run) that check is skipped.
    """
    if not np.isfinite(candidate):
        return BlessingDecision(False, f"metric is not finite ({candidate})")
    if candidate < floor:
        return BlessingDecision(False, f"recall {candidate:.4f} is below the floor {floor:.4f}")
    if chance is not None and candidate < chance + min_lift:
        return BlessingDecision(
            False,
            f"recall {candidate:.4f} does not beat chance level {chance:.4f} by the required"
            f" {min_lift:.4f}",
        )
    if baseline is not None and candidate < baseline - max_regression:
        return BlessingDecision(
            False,
            f"recall {candidate:.4f} regresses past the last blessed model's {baseline:.4f}"
            f" by more than {max_regression:.4f}",
        )
    against = "no blessed baseline yet" if baseline is None else f"baseline {baseline:.4f}"
    lift = "" if chance is None else f", chance {chance:.4f} + {min_lift:.4f}"
    return BlessingDecision(True, f"recall {candidate:.4f} >= floor {floor:.4f}{lift}; {against}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
