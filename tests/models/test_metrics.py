"""Cascade metrics: hand-worked values, ties in expectation (checked against brute force over
every tie-breaking order), degenerate requests, list-order invariance, Keras means."""

import itertools
import json

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from models import metrics
from models.config import MetricConfig, StageConfig


def _np(x) -> np.ndarray:
    return np.asarray(x)


def test_cascade_recall_by_hand():
    # 6 items, ground truth (gt_num=2) = items 0 and 1 (labels 5, 4).
    labels = np.array([[5.0, 4.0, 1.0, 1.0, 0.0, 0.0]])
    mask = np.ones((1, 6))
    # Stage 1 keeps its top 4 by s1: items 0, 2, 3, 4 (item 1 is dropped: 1 - 0.1 lowest).
    s1 = np.array([[0.9, 0.1, 0.8, 0.7, 0.6, 0.2]])
    # Stage 2 keeps its top 2 of those by s2: items 3 (0.9) and 0 (0.5); item 1 has 1.0 but
    # never reached stage 2.
    s2 = np.array([[0.5, 1.0, 0.1, 0.9, 0.2, 0.3]])
    recall = metrics.cascade_recall([s1, s2], labels, mask, (4, 2), 2)
    np.testing.assert_allclose(_np(recall), [0.5])
    # Stage 2 alone over the whole list keeps items 1 and 3: recall 1/2 as well, by item 1.
    np.testing.assert_allclose(_np(metrics.cascade_recall([s2], labels, mask, (2,), 2)), [0.5])
    np.testing.assert_allclose(_np(metrics.stage_recall(s1, labels, mask, k=4, gt_num=2)), [0.5])


def test_tied_boundary_group_shares_the_remaining_slots():
    # k = 2: item 0 is above the boundary; items 1, 2, 3 tie for the one slot left.
    scores = np.array([[3.0, 2.0, 2.0, 2.0, 1.0]])
    kept = _np(metrics.expected_top_k(scores, np.ones((1, 5)), 2))
    np.testing.assert_allclose(kept, [[1, 1 / 3, 1 / 3, 1 / 3, 0]], rtol=1e-6)
    # Ground truth over tied labels works the same way: gt_num = 2 of labels (4, 2, 2, 2, 0).
    labels = np.array([[4.0, 2.0, 2.0, 2.0, 0.0]])
    y = _np(metrics.ground_truth_weights(labels, None, 2))
    np.testing.assert_allclose(y, [[1, 1 / 3, 1 / 3, 1 / 3, 0]], rtol=1e-6)


@pytest.mark.parametrize(
    ("n_valid", "expected"),
    [(40, 0.5), (36, 20 / 36), (30, 20 / 30), (25, 20 / 25), (20, 1.0), (12, 1.0)],
)
def test_constant_scores_score_exactly_chance_level(n_valid, expected):
    # Keep 30 then 20: 20 of n survive (n = 40: half), all of a list of 20 or fewer.
    mask = np.zeros((1, 40))
    mask[0, :n_valid] = 1
    labels = np.where(mask > 0, np.arange(40, 0, -1.0), 0.0)
    constant = np.zeros((1, 40))
    recall = metrics.cascade_recall([constant, constant], labels, mask, (30, 20), 10)
    np.testing.assert_allclose(_np(recall), [expected], rtol=1e-6)
    # One stage keeping 30 of 40 by constant scores: 0.75.
    if n_valid == 40:
        recall = metrics.stage_recall(constant, labels, mask, 30, 10)
        np.testing.assert_allclose(_np(recall), [0.75])


def _hard_top_k(scores, pool, k, tie_rank):
    """The top k of the pool, ties broken by tie_rank (a permutation of the items)."""
    candidates = [i for i in range(len(scores)) if pool[i]]
    candidates.sort(key=lambda i: (-scores[i], tie_rank[i]))
    kept = np.zeros(len(scores), bool)
    kept[candidates[:k]] = True
    return kept


def _brute_force_selection(stage_scores, ks, n):
    """Mean over every tie-breaking order of every stage (independent), of what survives."""
    total = np.zeros(n)
    orders = list(itertools.permutations(range(n)))
    count = 0
    for per_stage in itertools.product(orders, repeat=len(stage_scores)):
        kept = np.ones(n, bool)
        for scores, k, rank in zip(stage_scores, ks, per_stage, strict=True):
            kept = _hard_top_k(scores, kept, k, rank)
        total += kept
        count += 1
    return total / count


@pytest.mark.parametrize(
    "scores",
    [[2, 2, 2, 2, 2], [3, 1, 1, 1, 0], [1, 2, 2, 3, 3], [0.5, 0.1, 0.5, 0.1, 0.5], [4, 3, 2, 1, 0]],
)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_one_stage_is_exact_expectation_over_random_tie_breaks(scores, k):
    expected = _brute_force_selection([np.array(scores, float)], (k,), 5)
    got = _np(metrics.cascade_selection([np.array([scores], float)], None, (k,)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("s1", "s2"),
    [
        ([5, 4, 3, 2, 1], [1, 2, 3, 3, 9]),  # no tie at stage 1's cut-off: a fixed pool
        ([5, 4, 3, 3, 3], [0, 0, 0, 0, 0]),  # ties at stage 1's cut-off, stage 2 constant
        ([1, 1, 1, 1, 1], [7, 7, 7, 7, 7]),  # both constant
        ([5, 5, 3, 3, 1], [2, 2, 2, 2, 2]),
    ],
)
def test_cascade_composition_is_exact_where_the_docstring_says(s1, s2):
    stages = [np.array(s1, float), np.array(s2, float)]
    expected = _brute_force_selection(stages, (3, 2), 5)
    got = _np(metrics.cascade_selection([s[None] for s in stages], None, (3, 2)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cascade_composition_elsewhere_is_mean_field_and_keeps_k():
    # A tie straddling stage 1's cut-off, then a stage that separates the tied items: the
    # documented approximation. Still k2 items kept in total, each within [0, its pool weight].
    s1, s2 = np.array([5.0, 3, 3, 3, 1]), np.array([0.0, 4, 3, 2, 1])
    exact = _brute_force_selection([s1, s2], (3, 2), 5)
    kept1 = _np(metrics.cascade_selection([s1[None]], None, (3,)))[0]
    got = _np(metrics.cascade_selection([s1[None], s2[None]], None, (3, 2)))[0]
    assert got.sum() == pytest.approx(2.0) and exact.sum() == pytest.approx(2.0)
    assert (got <= kept1 + 1e-6).all() and (got >= 0).all()
    assert np.abs(got - exact).max() < 0.2, (got, exact)


def _brute_force_ndcg(scores, labels, k):
    gains = 2.0**labels - 1
    discount = np.array([1 / np.log2(r + 2) if r < k else 0.0 for r in range(len(scores))])
    ideal = (np.sort(gains)[::-1] * discount).sum()
    dcgs = [
        (gains[sorted(range(len(scores)), key=lambda i: (-scores[i], rank[i]))] * discount).sum()
        for rank in itertools.permutations(range(len(scores)))
    ]
    return np.mean(dcgs) / ideal if ideal > 0 else 0.0


@pytest.mark.parametrize(
    "scores", [[1, 1, 1, 1, 1, 1], [3, 2, 2, 1, 1, 0], [0, 1, 2, 3, 4, 5], [2, 2, 1, 1, 2, 0]]
)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_ndcg_is_the_expected_dcg_over_tie_breaks(scores, k):
    labels = np.array([3.0, 0.0, 2.0, 2.0, 1.0, 0.0])
    expected = _brute_force_ndcg(np.array(scores, float), labels, k)
    got = _np(metrics.ndcg(np.array([scores], float), labels[None], None, k))[0]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ndcg_by_hand():
    labels = np.array([[2.0, 0.0, 1.0, 3.0]])
    scores = np.array([[0.4, 0.3, 0.2, 0.1]])  # ranking: items 0, 1, 2, 3
    mask = np.ones((1, 4))
    gains = 2.0 ** labels[0] - 1  # 3, 0, 1, 7
    dcg = gains[0] / np.log2(2) + gains[1] / np.log2(3) + gains[2] / np.log2(4)
    ideal = 7 / np.log2(2) + 3 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(_np(metrics.ndcg(scores, labels, mask, 3)), [dcg / ideal], 1e-6)


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


def _all_metrics(s1, s2, labels, mask):
    return {
        "cascade": metrics.cascade_recall([s1, s2], labels, mask, (12, 6), 4),
        "stage": metrics.stage_recall(s2, labels, mask, 6, 4),
        "ndcg": metrics.ndcg(s1, labels, mask, 5),
        "tau": metrics.kendall_tau(s1, labels, mask),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permuting_a_requests_candidates_changes_no_metric(seed):
    (s1, s2), labels, mask = _random_batch(seed)
    rng = np.random.default_rng(100 + seed)
    perm = np.stack([rng.permutation(labels.shape[1]) for _ in labels])

    def shuffle(x):
        return np.take_along_axis(x, perm, axis=1)

    before = _all_metrics(s1, s2, labels, mask)
    after = _all_metrics(shuffle(s1), shuffle(s2), shuffle(labels), shuffle(mask))
    for name in before:
        np.testing.assert_allclose(_np(after[name]), _np(before[name]), atol=1e-6, err_msg=name)


def test_masked_items_are_never_selected_nor_ground_truth():
    labels = np.array([[0.0, 3.0, 3.0, 9.0, 0.0]])
    mask = np.array([[1, 1, 1, 0, 1]])
    scores = np.array([[1.0, 1.0, 1.0, 1e9, 1.0]])  # the masked item has the top score
    kept = _np(metrics.cascade_selection([scores], mask, (2,)))
    np.testing.assert_allclose(kept, [[0.5, 0.5, 0.5, 0, 0.5]])
    # Ground truth (gt_num = 2): items 1 and 2 (item 3 has the top label but is padding); each
    # is kept with probability 1/2.
    np.testing.assert_allclose(_np(metrics.stage_recall(scores, labels, mask, 2, 2)), [0.5])
    # Fewer valid items than k: everything valid is kept, padding still not.
    kept = _np(metrics.cascade_selection([scores], mask, (10,)))
    np.testing.assert_array_equal(kept, [[1, 1, 1, 0, 1]])


def test_nan_scores_rank_lowest_without_nan_metrics():
    labels = np.array([[3.0, 2.0, 1.0, 0.0]])
    scores = np.array([[np.nan, np.inf, -np.inf, np.nan]])
    kept = _np(metrics.cascade_selection([scores], None, (2,)))
    # inf first; NaN ranks as -inf: three items tie for the last slot.
    np.testing.assert_allclose(kept, [[1 / 3, 1, 1 / 3, 1 / 3]], rtol=1e-6)
    for name, value in _all_metrics(scores, scores, labels, np.ones((1, 4))).items():
        assert np.isfinite(_np(value)).all(), name


def test_degenerate_requests():
    n = 8
    labels = np.tile(np.arange(n, 0, -1.0), (4, 1))
    mask = np.ones((4, n))
    mask[0] = 0  # an empty list
    mask[1, 1:] = 0  # one valid item
    labels[2] = 1.0  # every label tied
    constant = np.zeros((4, n))
    recall = _np(metrics.cascade_recall([constant, constant], labels, mask, (4, 2), 2))
    # Empty: 0 (and not counted); one item: kept; all labels tied: gt weight 2/8 each, keep 2/8.
    np.testing.assert_allclose(recall, [0, 1, 2 / 8, 2 / 8], atol=1e-6)
    np.testing.assert_array_equal(_np(metrics.requests_counted(mask, labels)), [0, 1, 1, 1])
    tau = _np(metrics.kendall_tau(constant, labels, mask))
    np.testing.assert_array_equal(tau, [0, 0, 0, 0])  # undefined -> 0, the uninformative value
    ndcg = _np(metrics.ndcg(constant, labels, mask, 3))
    assert ndcg[0] == 0 and ndcg[1] == pytest.approx(1.0) and ndcg[2] == pytest.approx(1.0)


def test_kendall_tau_is_scipys_tau_b():
    (scores, _), labels, mask = _random_batch(3)
    values = _np(metrics.kendall_tau(scores, labels, mask))
    for b in range(2, len(labels)):
        valid = mask[b].astype(bool)
        expected = scipy.stats.kendalltau(scores[b][valid], labels[b][valid], variant="b")[0]
        np.testing.assert_allclose(values[b], expected, rtol=1e-5)
    assert values[0] == 0 and values[1] == 0  # undefined: no valid item, one valid item


def test_keras_metrics_average_over_requests_with_a_valid_item():
    (s1, s2), labels, mask = _random_batch(4)
    config = MetricConfig(gt_num=4, ndcg_k=5)
    stages = (
        StageConfig("retrieval", "two_tower", 12, "retrieval"),
        StageConfig("ranking", "din", 6, "rescore"),
    )
    built = metrics.from_config(config, stages)
    # Two batches: the mean is over requests, not over batches.
    for rows in (slice(0, 5), slice(5, None)):
        metrics.update_cascade_metrics(
            built, labels[rows], {"retrieval": s1[rows], "ranking": s2[rows]}, mask[rows]
        )
    counted = slice(1, None)  # row 0 has no valid item; every other row counts, row 1 too
    expected = {
        "cascade_recall": metrics.cascade_recall([s1, s2], labels, mask, (12, 6), 4),
        "retrieval_recall": metrics.stage_recall(s1, labels, mask, 12, 4),
        "ranking_recall": metrics.stage_recall(s2, labels, mask, 6, 4),
        "retrieval_ndcg": metrics.ndcg(s1, labels, mask, 5),
        "ranking_ndcg": metrics.ndcg(s2, labels, mask, 5),
        "retrieval_kendall_tau": metrics.kendall_tau(s1, labels, mask),
        "ranking_kendall_tau": metrics.kendall_tau(s2, labels, mask),
    }
    assert set(expected) == set(built)
    for role, values in expected.items():
        np.testing.assert_allclose(
            built[role].result().numpy(), _np(values)[counted].mean(), rtol=1e-5, err_msg=role
        )
    assert built["cascade_recall"].name == "recall_at_4_at_12_at_6"


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
    expected = _np(metrics.cascade_recall([s1, s2], labels, mask, (12, 6), 4))[1:].mean()
    np.testing.assert_allclose(restored.result().numpy(), expected, rtol=1e-5)


THREE_STAGES = (
    StageConfig("retrieval", "two_tower", 16, "retrieval"),
    StageConfig("prerank", "mlp", 12, "rescore"),
    StageConfig("ranking", "din", 6, "rescore"),
)


def test_three_stage_keras_metrics_constant_scores_empty_lists_and_list_order():
    """N = 3: constant scores score exactly chance level (k3 / n for a full list), padding-only
    requests count for nothing, and permuting candidates changes no figure."""
    config = MetricConfig(gt_num=4, ndcg_k=5)
    n_list = 20
    labels = np.tile(np.array([[3.9, 3.8, 3.7, 3.6, *[2.0] * 6, *[1.0] * 5, *[0.0] * 5]]), (3, 1))
    mask = np.ones((3, n_list), np.int64)
    mask[2] = 0  # an empty list
    constant = {s.name: np.zeros((3, n_list), np.float32) for s in THREE_STAGES}
    built = metrics.from_config(config, THREE_STAGES)
    metrics.update_cascade_metrics(built, labels.astype(np.float32), constant, mask)
    assert built["cascade_recall"].name == "recall_at_4_at_16_at_12_at_6"
    np.testing.assert_allclose(built["cascade_recall"].result().numpy(), 6 / 20, rtol=1e-6)
    np.testing.assert_allclose(built["prerank_recall"].result().numpy(), 12 / 20, rtol=1e-6)
    assert float(built["ranking_kendall_tau"].result()) == 0.0
    assert float(built["cascade_recall"].count) == 2  # the empty list is not counted
    # Random scores, then the same requests with their candidates permuted.
    rng = np.random.default_rng(0)
    scores = {
        s.name: np.round(rng.normal(size=(3, n_list)), 1).astype(np.float32) for s in THREE_STAGES
    }
    first = metrics.from_config(config, THREE_STAGES)
    metrics.update_cascade_metrics(first, labels.astype(np.float32), scores, mask)
    perm = rng.permutation(n_list)
    second = metrics.from_config(config, THREE_STAGES)
    metrics.update_cascade_metrics(
        second,
        labels[:, perm].astype(np.float32),
        {k: v[:, perm] for k, v in scores.items()},
        mask[:, perm],
    )
    for role in first:
        np.testing.assert_allclose(
            first[role].result().numpy(), second[role].result().numpy(), rtol=1e-5, err_msg=role
        )


def test_update_cascade_metrics_refuses_a_stage_count_that_does_not_match():
    built = metrics.from_config(MetricConfig(gt_num=4), THREE_STAGES)
    (s1, s2), labels, mask = _random_batch(0)
    with pytest.raises((ValueError, KeyError)):
        metrics.update_cascade_metrics(built, labels, {"retrieval": s1, "ranking": s2}, mask)
