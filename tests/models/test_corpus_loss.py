"""Retrieval's corpus term: values derived by hand, and TFRS's Retrieval task as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models.config import LossConfig
from models.losses import corpus_softmax_loss


def _nll(positive: float, negatives: list[float]) -> float:
    """-log softmax of the positive against the negatives."""
    return -positive + float(np.log(np.exp(positive) + np.sum(np.exp(negatives))))


# Two requests of two slots, one-dimensional embeddings; item 10 is in both lists (one item,
# one embedding).
QUERY = tf.constant([[1.0], [2.0]])
CANDIDATES = tf.constant([[[1.0], [0.0]], [[0.5], [1.0]]])
IDS = tf.constant([[10, 11], [12, 10]])
POSITIVES = tf.constant([[1.0, 0.0], [1.0, 0.0]])
ALL = tf.ones([2, 2])


def test_hand_computed_value_without_correction():
    # Request 0 (q = 1): logits of the four slots [1, 0, 0.5, 1]; its positive is item 10, so
    # both slots holding item 10 are left out of its negatives: {0 (item 11), 0.5 (item 12)}.
    # Request 1 (q = 2): logits [2, 0, 1, 2]; positive item 12 (logit 1), negatives the other
    # three slots {2, 0, 2}: item 10, sampled twice, counts twice.
    expected = (_nll(1.0, [0.0, 0.5]) + _nll(1.0, [2.0, 0.0, 2.0])) / 2
    got = corpus_softmax_loss(QUERY, CANDIDATES, IDS, POSITIVES, ALL)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_log_q_correction_and_temperature():
    q = {10: 0.5, 11: 0.25, 12: 0.25}
    log_q = tf.constant([[np.log(q[10]), np.log(q[11])], [np.log(q[12]), np.log(q[10])]])
    c = {i: -np.log(v) for i, v in q.items()}  # + correction of each item
    t = 2.0
    expected = (
        _nll(1 / t + c[10], [0 / t + c[11], 0.5 / t + c[12]])
        + _nll(1 / t + c[12], [2 / t + c[10], 0 / t + c[11], 2 / t + c[10]])
    ) / 2
    got = corpus_softmax_loss(QUERY, CANDIDATES, IDS, POSITIVES, ALL, log_q, temperature=t)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_unsampled_slots_do_not_count():
    samples = tf.constant([[1.0, 0.0], [1.0, 1.0]])  # request 0's slot 1 (item 11) is padding
    expected = (_nll(1.0, [0.5]) + _nll(1.0, [2.0, 2.0])) / 2
    got = corpus_softmax_loss(QUERY, CANDIDATES, IDS, POSITIVES, samples)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    # Whatever the padding slot's embedding, the value is the same.
    moved = tf.constant([[[1.0], [9.0]], [[0.5], [1.0]]])
    np.testing.assert_allclose(
        corpus_softmax_loss(QUERY, moved, IDS, POSITIVES, samples).numpy(), expected, rtol=1e-6
    )


def test_several_positives_of_one_request_are_never_each_others_negatives():
    positives = tf.constant([[1.0, 1.0], [0.0, 0.0]])  # request 0: items 10 and 11
    # Request 0's negatives: only item 12 (0.5); item 10 in request 1's list is its own positive.
    expected = (_nll(1.0, [0.5]) + _nll(0.0, [0.5])) / 2
    got = corpus_softmax_loss(QUERY, CANDIDATES, IDS, positives, ALL)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_no_negative_and_no_positive_give_finite_values_and_gradients():
    query = tf.Variable([[1.0]])
    candidates = tf.Variable([[[1.0], [2.0]]])
    with tf.GradientTape() as tape:
        loss = corpus_softmax_loss(query, candidates, [[1, 2]], [[1.0, 1.0]], [[1.0, 1.0]])
    grads = tape.gradient(loss, [query, candidates])
    assert abs(float(loss)) < 1e-6
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    none = corpus_softmax_loss(QUERY, CANDIDATES, IDS, tf.zeros([2, 2]), ALL)
    assert float(none) == 0.0
    # Nothing sampled: every positive stands alone.
    with tf.GradientTape() as tape:
        alone = corpus_softmax_loss(query, candidates, [[1, 2]], [[1.0, 0.0]], [[0.0, 0.0]])
    grads = tape.gradient(alone, [query, candidates])
    assert float(alone) == 0.0
    assert all(g is None or np.all(np.isfinite(g.numpy())) for g in grads)


def test_equals_tfrs_retrieval_with_sampling_probability_and_accidental_hits():
    rng = np.random.default_rng(0)
    batch, dim = 8, 4
    query = rng.normal(size=(batch, dim)).astype(np.float32)
    positives = rng.normal(size=(batch, dim)).astype(np.float32)
    ids = np.array([3, 7, 3, 1, 9, 7, 2, 5])  # repeats: accidental hits
    positives[2] = positives[0]  # the same item has the same embedding
    positives[5] = positives[1]
    probability = rng.uniform(0.01, 0.3, size=batch).astype(np.float32)
    probability[2], probability[5] = probability[0], probability[1]
    task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM
        ),
        metrics=None,
        remove_accidental_hits=True,
        temperature=0.5,
    )
    reference = task(
        tf.constant(query),
        tf.constant(positives),
        candidate_sampling_probability=tf.constant(probability),
        candidate_ids=tf.constant(ids),
        compute_metrics=False,
    )
    ours = corpus_softmax_loss(
        query,
        positives[:, None, :],
        ids[:, None],
        tf.ones([batch, 1]),
        tf.ones([batch, 1]),
        np.log(probability)[:, None],
        temperature=0.5,
    )
    np.testing.assert_allclose(float(ours) * batch, float(reference), rtol=1e-5)


def test_config_validates_the_corpus_options():
    assert LossConfig().corpus_weight == 0.0
    with pytest.raises(ValueError, match="corpus_negatives"):
        LossConfig(corpus_negatives="uniform")
    with pytest.raises(ValueError, match="corpus_weight"):
        LossConfig(corpus_weight=-1.0)
