"""Cascade metrics: hand-worked values, TF == NumPy, SciPy's Kendall tau, Keras means."""

import json

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from models import metrics
from models.config import MetricConfig
from models.metrics import numpy_metrics as npm


def test_cascade_recall_by_hand():
    # 6 items, ground truth (gt_num=2) = items 0 and 1 (labels 5, 4).
    labels = np.array([[5.0, 4.0, 1.0, 1.0, 0.0, 0.0]])
    mask = np.ones((1, 6))
    # Stage 1 keeps its top 4 by s1: items 0, 2, 3, 4 (item 1 is dropped: 1 - 0.1 lowest).
    s1 = np.array([[0.9, 0.1, 0.8, 0.7, 0.6, 0.2]])
    # Stage 2 keeps its top 2 of those by s2: items 3 (0.9) and 0 (0.5); item 1 has 1.0 but
    # never reached stage 2.
    s2 = np.array([[0.5, 1.0, 0.1, 0.9, 0.2, 0.3]])
    for fn in (metrics.cascade_recall, npm.cascade_recall):
        np.testing.assert_allclose(np.asarray(fn([s1, s2], labels, mask, (4, 2), 2)), [0.5])
        # Stage 2 alone over the whole list keeps items 1 and 3: recall 1/2 as well, by item 1.
        np.testing.assert_allclose(np.asarray(fn([s2], labels, mask, (2,), 2)), [0.5])
    np.testing.assert_allclose(npm.stage_recall(s1, labels, mask, k=4, gt_num=2), [0.5])


def test_masked_items_are_never_selected_and_ties_break_by_position():
    labels = np.array([[0.0, 3.0, 3.0, 3.0, 0.0]])
    mask = np.array([[1, 1, 1, 0, 1]])
    scores = np.array([[1.0, 1.0, 1.0, 1e9, 1.0]])  # the masked item has the top score
    for fn in (metrics.cascade_selection, npm.cascade_selection):
        np.testing.assert_array_equal(np.asarray(fn([scores], mask, (2,))), [[1, 1, 0, 0, 0]])
    # Ground truth (gt_num = 2): items 1 and 2 (item 3 ties but is padding).
    for fn in (metrics.stage_recall, npm.stage_recall):
        np.testing.assert_allclose(np.asarray(fn(scores, labels, mask, k=2, gt_num=2)), [0.5])
    # Fewer valid items than k: everything valid is kept, padding still not.
    kept = npm.cascade_selection([scores], mask, (10,))
    np.testing.assert_array_equal(kept, [[1, 1, 1, 0, 1]])


def test_ndcg_by_hand():
    labels = np.array([[2.0, 0.0, 1.0, 3.0]])
    scores = np.array([[0.4, 0.3, 0.2, 0.1]])  # ranking: items 0, 1, 2, 3
    mask = np.ones((1, 4))
    gains = 2.0 ** labels[0] - 1  # 3, 0, 1, 7
    dcg = gains[0] / np.log2(2) + gains[1] / np.log2(3) + gains[2] / np.log2(4)
    ideal = 7 / np.log2(2) + 3 / np.log2(3) + 1 / np.log2(4)
    for fn in (metrics.ndcg, npm.ndcg):
        np.testing.assert_allclose(np.asarray(fn(scores, labels, mask, 3)), [dcg / ideal], 1e-6)


def _random_batch(seed, batch=16, n_list=20):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(batch, n_list)).astype(np.float32)
    labels += (rng.random((batch, n_list)) < 0.3) * rng.integers(1, 10, (batch, n_list)) / 10
    # Coarse scores so that ties are frequent.
    stage_scores = [np.round(rng.normal(size=(batch, n_list)), 1).astype(np.float32) for _ in "ab"]
    mask = (rng.random((batch, n_list)) < 0.8).astype(np.int64)
    mask[0] = 0
    mask[1, 1:] = 0
    mask[1, 0] = 1  # a single valid item
    return stage_scores, labels, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_tensorflow_and_numpy_agree(seed):
    (s1, s2), labels, mask = _random_batch(seed)
    pairs = [
        (
            metrics.cascade_recall([s1, s2], labels, mask, (12, 6), 4),
            npm.cascade_recall([s1, s2], labels, mask, (12, 6), 4),
        ),
        (metrics.stage_recall(s2, labels, mask, 6, 4), npm.stage_recall(s2, labels, mask, 6, 4)),
        (metrics.ndcg(s1, labels, mask, 5), npm.ndcg(s1, labels, mask, 5)),
        (metrics.kendall_tau(s1, labels, mask), npm.kendall_tau(s1, labels, mask)),
    ]
    for tf_value, np_value in pairs:
        assert tf_value.shape == (16,)
        np.testing.assert_allclose(tf_value.numpy(), np_value, rtol=1e-5, atol=1e-6)


def test_kendall_tau_is_scipys_tau_b():
    (scores, _), labels, mask = _random_batch(3)
    values = npm.kendall_tau(scores, labels, mask)
    for b in range(2, len(labels)):
        valid = mask[b].astype(bool)
        expected = scipy.stats.kendalltau(scores[b][valid], labels[b][valid], variant="b")[0]
        np.testing.assert_allclose(values[b], expected, rtol=1e-5)
    assert values[0] == 0 and values[1] == 0  # undefined: no valid item, one valid item


def test_keras_metrics_average_over_defined_requests():
    (s1, s2), labels, mask = _random_batch(4)
    config = MetricConfig(gt_num=4, k1=12, k2=6, ndcg_k=5)
    built = metrics.from_config(config)
    built["cascade_recall"].update_state(labels, [s1, s2], mask)
    built["ranking_ndcg"].update_state(labels, s2, mask)
    built["retrieval_kendall_tau"].update_state(labels[:8], s1[:8], mask[:8])
    built["retrieval_kendall_tau"].update_state(labels[8:], s1[8:], mask[8:])
    recall = npm.cascade_recall([s1, s2], labels, mask, (12, 6), 4)
    np.testing.assert_allclose(built["cascade_recall"].result().numpy(), recall[1:].mean(), 1e-5)
    assert built["cascade_recall"].name == "recall_at_4_at_12_at_6"
    np.testing.assert_allclose(
        built["ranking_ndcg"].result().numpy(), npm.ndcg(s2, labels, mask, 5)[1:].mean(), 1e-5
    )
    tau = npm.kendall_tau(s1, labels, mask)
    np.testing.assert_allclose(
        built["retrieval_kendall_tau"].result().numpy(), tau[2:].mean(), 1e-5
    )


def test_keras_stage_recall_is_the_function_mean():
    (s1, _), labels, mask = _random_batch(6)
    metric = metrics.from_config(MetricConfig(gt_num=4, k1=12, k2=6))["retrieval_recall"]
    metric.update_state(labels, s1, mask)
    expected = metrics.stage_recall(s1, labels, mask, 12, 4).numpy()[1:].mean()
    np.testing.assert_allclose(metric.result().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "metric",
    [
        metrics.CascadeRecall(ks=(12, 6), gt_num=4),
        metrics.StageRecall(k=7, gt_num=3),
        metrics.NDCG(k=5),
        metrics.KendallTau(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_keras_metric_round_trips_through_its_config(metric):
    restored = type(metric).from_config(json.loads(json.dumps(metric.get_config())))
    assert restored.get_config() == metric.get_config()


def test_keras_metrics_serialize_and_work_in_a_graph():
    metric = metrics.CascadeRecall(ks=(12, 6), gt_num=4)
    restored = tf.keras.metrics.deserialize(tf.keras.metrics.serialize(metric))
    assert (
        isinstance(restored, metrics.CascadeRecall) and restored.get_config() == metric.get_config()
    )
    (s1, s2), labels, mask = _random_batch(5)
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None, None], tf.int64)])
    def update(labels, s1, s2, mask):
        restored.update_state(labels, [s1, s2], mask)

    update(labels, s1, s2, mask)
    expected = npm.cascade_recall([s1, s2], labels, mask, (12, 6), 4)[1:].mean()
    np.testing.assert_allclose(restored.result().numpy(), expected, rtol=1e-5)
