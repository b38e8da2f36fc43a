"""The corpus term trained through the Trainer's code path (``run_fn``'s ``train_and_export`` over
real FnArgs and a real Transform run): it is logged, it learns, and the export keeps every
serving signature exactly as the default export has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEPS = 100  # the serving tests' default pair (seed 1) is the reference export
SEED = 1


@pytest.fixture(scope="module")
def with_corpus(train_cascade):
    return train_cascade(steps=STEPS, seed=SEED, loss={"corpus_weight": 1.0})


@pytest.fixture(scope="module")
def default(train_cascade):
    return train_cascade(steps=STEPS, seed=SEED)


def _signature_defs(export_dir: Path) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    (graph,) = model.meta_graphs
    return {name: signature for name, signature in graph.signature_def.items()}


def test_corpus_term_is_logged_and_decreases(with_corpus):
    history = with_corpus.history
    assert "l_corpus" in history and "val_l_corpus" in history
    assert all(np.isfinite(history["l_corpus"]))
    assert history["l_corpus"][-1] < history["l_corpus"][0], history["l_corpus"]
    assert with_corpus.model.loss_config.corpus_weight == 1.0
    assert with_corpus.model.loss_config.corpus_negatives == "in_batch"  # the default


def test_export_signatures_equal_the_default_exports(with_corpus, default):
    for stage in ("retrieval", "ranking"):
        ours = _signature_defs(with_corpus.export_dirs[stage])
        reference = _signature_defs(default.export_dirs[stage])
        assert sorted(ours) == sorted(reference), stage
        for name, signature in reference.items():
            assert ours[name] == signature, (stage, name)
    # Same corpus, different weights: the option changed the model, not the contract.
    np.testing.assert_array_equal(with_corpus.corpus.video_ids, default.corpus.video_ids)
    a = with_corpus.model.retrieval.candidate_tower.get_weights()[0]
    b = default.model.retrieval.candidate_tower.get_weights()[0]
    assert a.shape == b.shape and not np.allclose(a, b)


def test_sampling_probability_is_the_items_share_of_logged_slots(transformed_log):
    import glob

    import tensorflow as tf
    import tensorflow_transform as tft

    from models import data, features, preprocessing

    output = tft.TFTransformOutput(transformed_log["transform_graph"])
    size = preprocessing.vocabulary_sizes(output)["video_id"]
    files = f"{transformed_log['transformed_examples']}/Split-train/*"
    log_q = data.item_sampling_log_q(files, output, size)
    # Independently: count raw video ids over the raw list-wise examples' valid slots.
    counts: dict[int, int] = {}
    raw_files = sorted(glob.glob(f"{transformed_log['examples']}/Split-train/*"))
    for record in tf.data.TFRecordDataset(raw_files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        ids = feature["video_id"].int64_list.value
        mask = feature[features.MASK].int64_list.value
        for video, valid in zip(ids, mask, strict=True):
            if valid:
                counts[video] = counts.get(video, 0) + 1
    total = sum(counts.values())
    vocabulary = [int(v) for v in output.vocabulary_by_name("vocab_video_id")]
    index = {video: i + 1 for i, video in enumerate(vocabulary)}  # 0 is padding
    for video in sorted(counts, key=counts.get)[-3:] + sorted(counts, key=counts.get)[:3]:
        np.testing.assert_allclose(np.exp(log_q[index[video]]), counts[video] / total, rtol=1e-5)
    # A vocabulary item never logged as a candidate (only seen in sequences) counts once.
    unlogged = [i for v, i in index.items() if v not in counts]
    if unlogged:
        np.testing.assert_allclose(np.exp(log_q[unlogged[0]]), 1 / total, rtol=1e-5)
