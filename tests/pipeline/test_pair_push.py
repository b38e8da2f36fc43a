"""Paired push: one version for both stages, validated in a fresh process, atomic under crashes.

The SavedModels are two short training runs of the real cascade (the session's
``train_cascade`` fixture), copied so that a push cannot touch the originals.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.cascade_pusher import pair_push, warmup
from models import features

pytestmark = pytest.mark.slow


def _example(request_id: int, list_size: int = 40, valid: int = 25) -> bytes:
    """One list-wise raw example as the ingestion writes it (any ids: unknown ones go to the
    models' out-of-vocabulary buckets)."""

    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    rng = np.random.default_rng(request_id)
    feats = {name: ints([rng.integers(1, 50)]) for name in features.CONTEXT_FEATURES}
    feats["request_timestamp"] = ints([1_700_000_000_000])
    for name in features.SEQUENCE_FEATURES:
        feats[name] = ints([*rng.integers(1, 50, 5), *[features.PAD_ID] * (features.SEQ_LEN - 5)])
    mask = [1] * valid + [0] * (list_size - valid)
    padding = [features.PAD_ID] * (list_size - valid)
    feats["video_id"] = ints([*rng.integers(0, 400, valid), *padding])
    feats[features.MASK] = ints(mask)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, train_cascade) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("exports")
    pairs = {}
    for name, seed in (("a", 1), ("b", 2)):
        trained = train_cascade(steps=100, seed=seed)
        pairs[name] = {}
        for stage, path in trained.export_dirs.items():
            pairs[name][stage] = root / name / stage
            shutil.copytree(path, pairs[name][stage])
    return pairs


def _records() -> dict[str, list[bytes]]:
    return warmup.warmup_records([_example(i) for i in range(5)], limit=4)


def test_warmup_requests_come_from_the_logged_request() -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    records = _records()
    assert {k: len(v) for k, v in records.items()} == {"retrieval": 4, "ranking": 4}
    ranking = prediction_log_pb2.PredictionLog.FromString(records["ranking"][0])
    request = ranking.predict_log.request
    assert request.model_spec.name == "ranking"
    assert set(request.inputs) == {*features.RETRIEVAL_QUERY_FEATURES, "video_id"}
    video_ids = tf.make_ndarray(request.inputs["video_id"])
    assert video_ids.shape == (1, 25)  # the valid candidates only
    retrieval = prediction_log_pb2.PredictionLog.FromString(records["retrieval"][0])
    assert set(retrieval.predict_log.request.inputs) == set(features.RETRIEVAL_QUERY_FEATURES)
    assert not set(features.LEAKY_FEATURES) & set(request.inputs)


def test_push_pairs_both_stages_under_one_version(tmp_path: Path, exports) -> None:
    serving = tmp_path / "serving"
    first = pair_push.push_pair(exports["a"], serving, _records(), metrics={"recall": 0.7})
    manifest = json.loads((serving / "manifest.json").read_text())
    assert manifest["version"] == first
    assert manifest["metrics"] == {"recall": 0.7}
    for stage in ("retrieval", "ranking"):
        model_dir = serving / stage / str(first)
        assert (model_dir / "saved_model.pb").exists()
        warm = list(tf.data.TFRecordDataset(str(model_dir / pair_push.WARMUP_FILE)))
        assert len(warm) == 4
    config = (serving / "models.config").read_text()
    assert config.count(f"versions: {first}") == 2

    second = pair_push.push_pair(exports["b"], serving, _records(), validate=False)
    assert second > first
    assert json.loads((serving / "manifest.json").read_text())["version"] == second
    assert not (serving / pair_push.STAGING).exists()


def test_crash_between_the_two_stages_keeps_the_previous_pair(
    tmp_path: Path, exports, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving = tmp_path / "serving"
    # Validation is not the subject here: skip the fresh-process load to keep the test fast.
    good = pair_push.push_pair(exports["a"], serving, _records(), validate=False)
    before = (serving / "manifest.json").read_text()

    real_rename = os.rename
    calls = []

    def crash_on_second_stage(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash: power lost between the two stages")
        return real_rename(src, dst)

    monkeypatch.setattr(pair_push.os, "rename", crash_on_second_stage)
    with pytest.raises(OSError, match="simulated crash"):
        pair_push.push_pair(exports["b"], serving, _records(), validate=False)
    monkeypatch.undo()

    # The new retrieval landed, the new ranking did not: the manifest still names the old pair.
    assert (serving / "manifest.json").read_text() == before
    assert f"versions: {good}" in (serving / "models.config").read_text()
    half = sorted(p.name for p in (serving / "retrieval").iterdir())
    assert len(half) == 2 and str(good) in half

    # The next push clears the leftover and publishes a complete pair.
    third = pair_push.push_pair(exports["b"], serving, _records(), validate=False)
    assert sorted(p.name for p in (serving / "retrieval").iterdir()) == [str(good), str(third)]
    assert sorted(p.name for p in (serving / "ranking").iterdir()) == [str(good), str(third)]


def test_a_pair_that_fails_validation_is_not_published(tmp_path: Path, exports) -> None:
    serving = tmp_path / "serving"
    good = pair_push.push_pair(exports["a"], serving, _records(), validate=False)
    broken = tmp_path / "broken_ranking"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(pair_push.PushValidationError, match="ranking|SavedModel|validation"):
        pair_push.push_pair(
            {"retrieval": exports["b"]["retrieval"], "ranking": broken}, serving, _records()
        )
    assert json.loads((serving / "manifest.json").read_text())["version"] == good
    assert sorted(p.name for p in (serving / "ranking").iterdir()) == [str(good)]
    assert not (serving / pair_push.STAGING).exists()
