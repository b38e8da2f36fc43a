"""Offline evaluation of a trained cascade as it will be served, and the blessing rule.

Both exported SavedModels score every logged candidate of each eval request through their
``serving_tf_example`` signature (raw features in, the Transform graph inside), so the figures
are those of the artifacts that would be pushed, not of the in-memory Keras model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import features
from models.config import MetricConfig

STAGES: tuple[str, ...] = ("retrieval", "ranking")


def stage_export_dirs(model_uri: str | Path) -> dict[str, Path]:
    """Stage name -> SavedModel folder inside a Trainer ``Model`` artifact.

    The Trainer exports both stages under ``Format-Serving/<stage>`` (TFX's serving_model_dir).
    """
    root = Path(model_uri)
    for base in (root / "Format-Serving", root):
        dirs = {stage: base / stage for stage in STAGES}
        if all((d / "saved_model.pb").exists() for d in dirs.values()):
            return dirs
    raise FileNotFoundError(f"no retrieval/ranking SavedModels under {root}")


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
    """Scores every eval request with both stages.

    Returns:
      ``retrieval`` and ``ranking`` scores [requests, list_size], ``label``, ``mask`` and one
      [requests] array per slice feature.
    """
    import tensorflow as tf

    models = {stage: tf.saved_model.load(str(path)) for stage, path in export_dirs.items()}
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


def cascade_metrics(scored: dict[str, np.ndarray], config: MetricConfig) -> dict[str, float]:
    """Means over requests of the paper's cascade metrics (``models.metrics.numpy_metrics``).

    ``end_to_end_recall`` is Recall@gt@k1@k2 (retrieval keeps its top-k1 of the logged list,
    ranking its top-k2 of those); per stage Recall@gt@k, NDCG@k and Kendall's tau.
    """
    from models.metrics import numpy_metrics as m

    labels, mask = scored[features.LABEL], scored[features.MASK]
    retrieval, ranking = scored["retrieval"], scored["ranking"]
    gt, k1, k2, nk = config.gt_num, config.k1, config.k2, config.ndcg_k
    per_request = {
        "end_to_end_recall": m.cascade_recall([retrieval, ranking], labels, mask, (k1, k2), gt),
        f"retrieval_recall_at_{gt}_at_{k1}": m.stage_recall(retrieval, labels, mask, k1, gt),
        f"ranking_recall_at_{gt}_at_{k2}": m.stage_recall(ranking, labels, mask, k2, gt),
        f"retrieval_ndcg_at_{nk}": m.ndcg(retrieval, labels, mask, nk),
        f"ranking_ndcg_at_{nk}": m.ndcg(ranking, labels, mask, nk),
        "retrieval_kendall_tau": m.kendall_tau(retrieval, labels, mask),
        "ranking_kendall_tau": m.kendall_tau(ranking, labels, mask),
    }
    return {name: float(np.mean(values)) for name, values in per_request.items()}


def evaluate(
    export_dirs: dict[str, Path],
    files: Sequence[str],
    config: MetricConfig,
    slice_features: Sequence[str] = (),
    batch_size: int = 256,
) -> dict[str, Any]:
    """Overall and per-slice metrics of one exported cascade on the given examples."""
    scored = score_requests(export_dirs, files, slice_features, batch_size)
    report: dict[str, Any] = {
        "requests": int(scored[features.MASK].shape[0]),
        "overall": cascade_metrics(scored, config),
        "slices": {},
    }
    for name in slice_features:
        for value in np.unique(scored[name]):
            rows = scored[name] == value
            subset = {k: v[rows] for k, v in scored.items()}
            report["slices"][f"{name}={int(value)}"] = {
                "requests": int(rows.sum()),
                **cascade_metrics(subset, config),
            }
    return report


@dataclasses.dataclass(frozen=True)
class BlessingDecision:
    blessed: bool
    reason: str


def decide_blessing(
    candidate: float, baseline: float | None, *, floor: float, max_regression: float
) -> BlessingDecision:
    """Blessed iff ``candidate >= floor`` and it is not worse than the baseline by more than
    ``max_regression`` (absolute). With no baseline (first run) only the floor applies."""
    if not np.isfinite(candidate):
        return BlessingDecision(False, f"metric is not finite ({candidate})")
    if candidate < floor:
        return BlessingDecision(False, f"recall {candidate:.4f} is below the floor {floor:.4f}")
    if baseline is not None and candidate < baseline - max_regression:
        return BlessingDecision(
            False,
            f"recall {candidate:.4f} regresses past the last blessed model's {baseline:.4f}"
            f" by more than {max_regression:.4f}",
        )
    against = "no blessed baseline yet" if baseline is None else f"baseline {baseline:.4f}"
    return BlessingDecision(True, f"recall {candidate:.4f} >= floor {floor:.4f}; {against}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
