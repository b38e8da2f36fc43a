"""The cascade trained by the real ``run_fn`` code path (real FnArgs over a real Transform run),
and its two SavedModels loaded in a fresh process, as TF Serving loads them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import features, metrics

pytestmark = pytest.mark.slow

STEPS = 300
PROBE_REQUESTS = 48
UNSEEN_ID = 987_654_321_000
RETRIEVAL_SIGNATURES = {
    "serving_default",
    "query_embedding",
    "candidate_embedding",
    "score",
    "serving_tf_example",
}
RANKING_SIGNATURES = {"serving_default", "serving_tf_example"}

# Runs in a fresh Python process: loads both SavedModels with tf.saved_model.load only (no
# project code) and calls every signature; writes the outputs to an .npz file.
PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    retrieval_dir, ranking_dir, requests_file, corpus_file, out_file = sys.argv[1:]
    retrieval = tf.saved_model.load(retrieval_dir).signatures
    ranking = tf.saved_model.load(ranking_dir).signatures
    requests = np.load(requests_file)
    corpus = np.load(corpus_file)
    meta = json.loads(str(requests["meta"]))
    query = {n: tf.constant(requests[n]) for n in meta["query"]}
    video_id = tf.constant(requests["video_id"])
    unseen = {n: tf.constant(requests["unseen_" + n]) for n in meta["query"]}
    unseen_items = tf.constant(requests["unseen_video_id"])
    out = {}
    for split in ("train", "eval"):
        records = tf.data.TFRecordDataset(split + ".tfrecord").as_numpy_iterator()
        examples = tf.constant(list(records))
        for stage, model in (("retrieval", retrieval), ("ranking", ranking)):
            scores = model["serving_tf_example"](examples=examples)["scores"]
            out[stage + "_examples_" + split] = scores
    out["retrieval_score"] = retrieval["score"](**query, video_id=video_id)["scores"]
    out["ranking_default"] = ranking["serving_default"](**query, video_id=video_id)["scores"]
    top = retrieval["serving_default"](**query)
    out["top_ids"], out["top_scores"] = top["video_id"], top["scores"]
    out["top_rescored"] = retrieval["score"](**query, video_id=top["video_id"])["scores"]
    out["query_embedding"] = retrieval["query_embedding"](**query)["embedding"]
    out["candidate_embedding"] = retrieval["candidate_embedding"](
        **{n: tf.constant(corpus[n]) for n in corpus.files})["embedding"]
    out["unseen_retrieval"] = retrieval["score"](**unseen, video_id=unseen_items)["scores"]
    out["unseen_ranking"] = ranking["serving_default"](**unseen, video_id=unseen_items)["scores"]
    out["unseen_top"] = retrieval["serving_default"](**unseen)["scores"]
    np.savez(out_file, **{k: np.asarray(v) for k, v in out.items()})
    """
)


def _raw_examples(examples_uri: str, split: str, n: int) -> list[bytes]:
    files = sorted(str(p) for p in Path(examples_uri, f"Split-{split}").glob("*"))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)
    return list(dataset.as_numpy_iterator())


def _parse(examples: list[bytes]) -> dict[str, np.ndarray]:
    """Raw list-wise examples -> raw features as Transform's schema has them."""
    first = tf.train.Example.FromString(examples[0]).features.feature
    list_size = len(first[features.MASK].int64_list.value)
    spec = {n: tf.io.FixedLenFeature([1], tf.int64) for n in features.CONTEXT_FEATURES}
    spec.update(
        {n: tf.io.FixedLenFeature([features.SEQ_LEN], tf.int64) for n in features.SEQUENCE_FEATURES}
    )
    spec.update({n: tf.io.FixedLenFeature([list_size], tf.int64) for n in features.ITEM_FEATURES})
    spec[features.MASK] = tf.io.FixedLenFeature([list_size], tf.int64)
    spec[features.LABEL] = tf.io.FixedLenFeature([list_size], tf.float32)
    parsed = tf.io.parse_example(tf.constant(examples), spec)
    return {k: v.numpy() for k, v in parsed.items()}


def _in_memory_scores(trained, transform_graph: str, raw: dict[str, np.ndarray]) -> dict:
    """The trained Keras stages on the same requests, fed through the Transform graph."""
    import tensorflow_transform as tft

    layer = tft.TFTransformOutput(transform_graph).transform_features_layer()
    inputs = {
        n: tf.constant(raw[n])
        for n in (*features.CONTEXT_FEATURES, *features.SEQUENCE_FEATURES, *features.ITEM_FEATURES)
    }
    logits = trained.model(layer(inputs))
    return {stage: value.numpy() for stage, value in logits.items()}


@pytest.fixture(scope="module")
def trained(train_cascade):
    return train_cascade(steps=STEPS)


@pytest.fixture(scope="module")
def probe(trained, transformed_log, tmp_path_factory) -> dict:
    """Both SavedModels called through every signature in a fresh process."""
    tmp = tmp_path_factory.mktemp("probe")
    train = _raw_examples(transformed_log["examples"], "train", PROBE_REQUESTS)
    evaluation = _raw_examples(transformed_log["examples"], "eval", PROBE_REQUESTS)
    raw = _parse(train)
    query_names = list(features.RETRIEVAL_QUERY_FEATURES)
    arrays = {}
    for name in query_names:
        arrays[name] = raw[name] if name in features.SEQUENCE_FEATURES else raw[name][:, 0]
        arrays["unseen_" + name] = arrays[name][:2].copy()
    arrays["unseen_user_id"][:] = UNSEEN_ID  # a user never seen in training
    arrays["video_id"] = raw["video_id"]
    known = raw["video_id"][0, 0]
    arrays["unseen_video_id"] = np.array([[UNSEEN_ID + 1, known], [known, UNSEEN_ID + 2]])
    for split, examples in (("train", train), ("eval", evaluation)):
        with tf.io.TFRecordWriter(str(tmp / f"{split}.tfrecord")) as writer:
            for example in examples:
                writer.write(example)
    arrays["meta"] = np.array(json.dumps({"query": query_names}))
    np.savez(tmp / "requests.npz", **arrays)
    np.savez(tmp / "corpus.npz", **trained.corpus.columns)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            str(trained.export_dirs["retrieval"]),
            str(trained.export_dirs["ranking"]),
            str(tmp / "requests.npz"),
            str(tmp / "corpus.npz"),
            str(tmp / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,  # not the repository: the process sees the SavedModels, not our code
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = dict(np.load(tmp / "out.npz"))
    out["raw_train"] = raw
    out["raw_eval"] = _parse(evaluation)
    return out


def test_training_decreases_the_loss(trained) -> None:
    l_e2e = trained.history["l_e2e"]
    assert len(l_e2e) == STEPS // 50
    assert l_e2e[-1] < 0.85 * l_e2e[0], l_e2e
    assert all(np.isfinite(v) for values in trained.history.values() for v in values)


def test_end_to_end_recall_beats_random_ranking(trained, probe) -> None:
    raw = probe["raw_eval"]
    labels, mask = raw[features.LABEL], raw[features.MASK]
    stages = [probe["retrieval_examples_eval"], probe["ranking_examples_eval"]]
    trained_recall = np.mean(metrics.cascade_recall(stages, labels, mask, (30, 20), 10))
    rng = np.random.default_rng(0)
    random_recall = np.mean(
        [
            np.mean(
                metrics.cascade_recall(
                    [rng.normal(size=labels.shape), rng.normal(size=labels.shape)],
                    labels,
                    mask,
                    (30, 20),
                    10,
                )
            )
            for _ in range(20)
        ]
    )
    assert trained_recall > random_recall + 0.15, (trained_recall, random_recall)
    # The eval figure Keras logged each epoch is of the same kind and also clear of random.
    assert trained.history["val_recall_at_10_at_30_at_20"][-1] > random_recall + 0.15


def test_signatures_reproduce_the_in_memory_model(trained, transformed_log, probe) -> None:
    graph = transformed_log["transform_graph"]
    for split in ("train", "eval"):
        expected = _in_memory_scores(trained, graph, probe[f"raw_{split}"])
        for stage in ("retrieval", "ranking"):
            np.testing.assert_allclose(
                probe[f"{stage}_examples_{split}"], expected[stage], rtol=1e-4, atol=1e-4
            )
    # Candidates given by id only (item features looked up inside the model): the training
    # requests' items are all in the item table, so the scores are the same.
    expected = _in_memory_scores(trained, graph, probe["raw_train"])
    np.testing.assert_allclose(probe["retrieval_score"], expected["retrieval"], atol=1e-4)
    np.testing.assert_allclose(probe["ranking_default"], expected["ranking"], atol=1e-4)


def test_retrieval_top_k_is_the_best_of_the_corpus(trained, probe) -> None:
    ids, scores = probe["top_ids"], probe["top_scores"]
    assert ids.shape == scores.shape == (PROBE_REQUESTS, 100)
    assert set(np.unique(ids)) <= set(trained.corpus.video_ids.tolist())
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(probe["top_rescored"], scores, rtol=1e-4, atol=1e-4)
    temperature = trained.model.model_config.retrieval_temperature
    all_scores = probe["query_embedding"] @ probe["candidate_embedding"].T / temperature
    best = -np.sort(-all_scores, axis=1)[:, :100]
    np.testing.assert_allclose(scores, best, rtol=1e-4, atol=1e-4)


def test_unseen_user_and_video_get_finite_scores(probe) -> None:
    for name in ("unseen_retrieval", "unseen_ranking", "unseen_top"):
        assert np.all(np.isfinite(probe[name])), name
    assert probe["unseen_retrieval"].shape == probe["unseen_ranking"].shape == (2, 2)


def test_saved_model_cli_lists_the_signatures_and_no_leaky_input(trained) -> None:
    cli = str(Path(sys.executable).parent / "saved_model_cli")
    for stage, wanted in (("retrieval", RETRIEVAL_SIGNATURES), ("ranking", RANKING_SIGNATURES)):
        proc = subprocess.run(
            [cli, "show", "--all", "--dir", str(trained.export_dirs[stage])],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        listed = set(
            line.split("'")[1]
            for line in proc.stdout.splitlines()
            if line.startswith("signature_def[")
        )
        assert wanted <= listed, (stage, listed)
        inputs = {line.split("'")[1] for line in proc.stdout.splitlines() if "inputs['" in line}
        assert not inputs & set(features.LEAKY_FEATURES), inputs
        assert "video_id" in inputs and "user_id" in inputs


def test_tensorboard_logs_every_loss_term_and_cascade_metric(trained) -> None:
    # run_fn's model_run_dir: <out>/model_run beside <out>/Format-Serving/<stage>.
    run_dir = trained.export_dirs["retrieval"].parents[1] / "model_run"
    tags: dict[str, set[str]] = {"train": set(), "validation": set()}
    for split, found in tags.items():
        for path in (run_dir / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                found.update(value.tag for value in event.summary.value)
    wanted = {
        "epoch_l_e2e",
        "epoch_l_single_retrieval",
        "epoch_l_single_ranking",
        "epoch_recall_at_10_at_30_at_20",
        "epoch_retrieval_recall_at_10_at_30",
        "epoch_ranking_recall_at_10_at_20",
    }
    assert wanted <= tags["train"], tags["train"]
    assert wanted <= tags["validation"], tags["validation"]
