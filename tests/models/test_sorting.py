"""Differentiable sorting: row-stochastic, hard in the limit, padding behaves as absent."""

import numpy as np
import pytest
import tensorflow as tf

from models.losses import sorting

OPS = [sorting.NEURAL_SORT, sorting.SOFT_SORT]


def _perm(op, scores, mask=None, tau=1.0):
    return sorting.permutation_matrix(
        tf.constant(scores, tf.float32),
        None if mask is None else tf.constant(mask, tf.float32),
        sort_op=op,
        tau=tau,
    ).numpy()


def test_neural_sort_by_hand():
    # s = (1, 0), n = 2, tau = 1. sum_k |s_i - s_k| = (1, 1).
    # rank 1: coefficient n + 1 - 2 = 1 -> logits (1 - 1, 0 - 1) = (0, -1)
    # rank 2: coefficient n + 1 - 4 = -1 -> logits (-1 - 1, 0 - 1) = (-2, -1)
    perm = _perm(sorting.NEURAL_SORT, [[1.0, 0.0]])[0]
    softmax = lambda v: np.exp(v) / np.exp(v).sum()  # noqa: E731
    np.testing.assert_allclose(perm[0], softmax(np.array([0.0, -1.0])), rtol=1e-6)
    np.testing.assert_allclose(perm[1], softmax(np.array([-2.0, -1.0])), rtol=1e-6)


def test_soft_sort_by_hand():
    # s = (0, 2), sorted = (2, 0). rank 1 logits -|2 - s_i| = (-2, 0); rank 2: (0, -2).
    perm = _perm(sorting.SOFT_SORT, [[0.0, 2.0]])[0]
    e = np.exp(-2.0)
    np.testing.assert_allclose(perm[0], [e / (1 + e), 1 / (1 + e)], rtol=1e-6)
    np.testing.assert_allclose(perm[1], [1 / (1 + e), e / (1 + e)], rtol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_rows_are_distributions_and_padding_rows_are_zero(op):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 7))
    mask = np.ones((3, 7))
    mask[1, [0, 3]] = 0  # 5 valid
    mask[2] = 0  # none valid
    perm = _perm(op, scores, mask, tau=0.7)
    assert np.all(perm >= 0)
    np.testing.assert_allclose(perm[0].sum(-1), np.ones(7), rtol=1e-5)
    np.testing.assert_allclose(perm[1].sum(-1), [1, 1, 1, 1, 1, 0, 0], atol=1e-6)
    assert np.all(perm[1][:, [0, 3]] == 0)  # padding never takes any rank
    assert np.all(perm[2] == 0)


@pytest.mark.parametrize("op", OPS)
def test_becomes_the_hard_sort_as_tau_goes_to_zero(op):
    rng = np.random.default_rng(1)
    scores = rng.permutation(np.arange(9.0))[None] * 0.3  # distinct, gaps 0.3
    hard = np.zeros((9, 9))
    hard[np.arange(9), np.argsort(-scores[0])] = 1.0
    errors = [np.abs(_perm(op, scores, tau=tau)[0] - hard).max() for tau in (1.0, 0.1, 0.01)]
    assert errors[0] > 0.05  # genuinely soft at tau = 1
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


@pytest.mark.parametrize("op", OPS)
def test_padding_behaves_as_absent(op):
    rng = np.random.default_rng(2)
    valid_scores = rng.normal(size=5)
    compact = _perm(op, valid_scores[None], tau=0.5)[0]
    # Same items spread over a list of 9 with padding holding extreme values.
    positions = np.array([1, 2, 4, 6, 8])
    scores = np.array([1e4, 0, 0, -1e4, 0, 1e4, 0, 50.0, 0])
    scores[positions] = valid_scores
    mask = np.zeros(9)
    mask[positions] = 1
    padded = _perm(op, scores[None], mask[None], tau=0.5)[0]
    np.testing.assert_allclose(padded[:5][:, positions], compact, rtol=1e-5, atol=1e-7)
    assert np.all(padded[5:] == 0)
    assert np.all(np.delete(padded, positions, axis=1) == 0)


@pytest.mark.parametrize("op", OPS)
def test_extreme_scores_give_finite_values_and_gradients(op):
    scores = tf.Variable([[1e4, -1e4, 0.0, 1e4], [5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    mask = tf.constant([[1.0, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    with tf.GradientTape() as tape:
        perm = sorting.permutation_matrix(scores, mask, sort_op=op, tau=50.0)
        objective = tf.reduce_sum(perm[:, :2, :] * tf.range(4.0))
    grad = tape.gradient(objective, scores)
    assert np.all(np.isfinite(perm.numpy()))
    assert np.all(np.isfinite(grad.numpy()))


def test_unknown_sort_op_is_rejected():
    with pytest.raises(ValueError, match="sort_op"):
        sorting.permutation_matrix(tf.zeros([1, 3]), sort_op="bitonic")
