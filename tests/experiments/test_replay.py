"""The replay's arithmetic and plumbing on a tiny simulated world (no TensorFlow).

The served pair is tested in tests/serving/test_replay_served.py; here the policies that read the
truth (perfect, the corpus oracle), a random one and the logged production cascade go through the
same scoring code the served answers go through.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import replay
from experiments.config import ExperimentConfig, ReplayConfig
from models.features import PAD_ID
from simulator import SimulatorConfig, simulate, truth

INF = np.inf
# One request, five videos; video 4 is not available yet.
AFFINITY = np.array([[3.0, 1.0, -2.0, 2.0, -INF]])


def test_recall_counts_distinct_available_items_of_the_true_best_set():
    # True best 2: videos 0 (3.0) and 3 (2.0).
    assert replay.recall(AFFINITY, np.array([[0, 3]]), 2)[0] == 1.0
    assert replay.recall(AFFINITY, np.array([[3, 0]]), 2)[0] == 1.0  # order does not matter
    assert replay.recall(AFFINITY, np.array([[0, 1]]), 2)[0] == 0.5
    # A repeated best item counts once; padding, unknown and unavailable ids are misses.
    assert replay.recall(AFFINITY, np.array([[0, 0]]), 2)[0] == 0.5
    assert replay.recall(AFFINITY, np.array([[PAD_ID, PAD_ID]]), 2)[0] == 0.0
    assert replay.recall(AFFINITY, np.array([[4, 99]]), 2)[0] == 0.0
    # Retrieval's longer list: the share of the best 2 it holds anywhere.
    assert replay.recall(AFFINITY, np.array([[2, 1, 3, 4]]), 2)[0] == 0.5


def test_recall_ties_at_the_boundary_all_count_and_short_corpora_cap_the_set():
    tied = np.array([[1.0, 1.0, 1.0, 0.0]])
    # Best 2 of three tied items: any two of them is a perfect answer, never more than 1.0.
    assert replay.recall(tied, np.array([[2, 1]]), 2)[0] == 1.0
    assert replay.recall(tied, np.array([[0, 1, 2]]), 2)[0] == 1.0
    assert replay.recall(tied, np.array([[3, 0]]), 2)[0] == 0.5
    # Two videos available, k = 5: the best set has two items.
    few = np.array([[0.5, 2.0, -INF]])
    assert replay.recall(few, np.array([[1, 0, PAD_ID, PAD_ID, PAD_ID]]), 5)[0] == 1.0


def test_ndcg_uses_the_true_affinity_clipped_at_zero_as_gain():
    d1, d2 = 1.0, 1.0 / np.log2(3)
    ideal = 3.0 * d1 + 2.0 * d2
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[0, 3]]), 2), [1.0])
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[3, 0]]), 2), [(2 + 3 * d2) / ideal])
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[1, 2]]), 2), [1.0 / ideal])
    # A repeat of the best item gains nothing the second time; padding gains nothing.
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[0, 0]]), 2), [3.0 / ideal])
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[PAD_ID, 4]]), 2), [0.0])
    # Only the first k count.
    np.testing.assert_allclose(replay.ndcg(AFFINITY, np.array([[0, 3, 1]]), 2), [1.0])
    # No positive affinity anywhere: undefined, not a perfect score.
    assert np.isnan(replay.ndcg(np.array([[-1.0, -2.0]]), np.array([[0, 1]]), 2)[0])


def test_a_request_with_nothing_available_is_an_error():
    with pytest.raises(ValueError, match="no available video"):
        replay.recall(np.array([[-INF, -INF]]), np.array([[0, 1]]), 2)


# --- a tiny simulated world --------------------------------------------------------------------

TINY = SimulatorConfig(
    num_users=200,
    new_users_per_day=10,
    num_initial_items=600,
    new_items_per_day=60,
    num_authors=50,
    pool_size=120,
    prerank_keep=60,
    coarse_keep=25,
)
K = 10


@pytest.fixture(scope="module")
def tiny_day(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_world")
    simulate(TINY, out, days=2, requests_per_day=200, seed=3)
    return out, truth.load_day(out, 1), truth.logged_items(out, [0])


def test_perfect_scores_one_random_scores_chance_production_in_between(tiny_day):
    out, day, corpus = tiny_day
    rows = np.arange(len(day.requests))
    policies = {
        "perfect": replay.oracle_policy(K),
        "random": replay.random_policy(K, corpus, seed=0),
        "production": replay.fixed_policy(day.requests.production),
        "corpus_oracle": replay.oracle_policy(K, corpus),
    }
    scores = replay.score_policies(day, rows, policies, K)
    assert scores["perfect"]["recall"] == 1.0
    assert scores["perfect"]["ndcg"] == pytest.approx(1.0)
    assert scores["perfect"]["ndcg_undefined"] == 0

    # Chance: k distinct of the m corpus items available; hits are hypergeometric with mean
    # k * |best ∩ corpus| / m per request.
    affinity = day.true_affinity(rows)
    threshold, size = replay.best_threshold(affinity, K)
    inside = np.isfinite(affinity[:, corpus])
    m = inside.sum(axis=1)
    good = ((affinity[:, corpus] >= threshold[:, None]) & inside).sum(axis=1)
    chance = np.mean(K * good / m / size)
    p = good / m
    sd = np.sqrt(np.mean(K * p * (1 - p) * (m - K) / (m - 1) / size**2) / len(rows))
    assert abs(scores["random"]["recall"] - chance) < 4 * sd + 1e-9, (scores["random"], chance)
    assert scores["random"]["recall"] < 0.1

    production = scores["production"]
    assert scores["random"]["recall"] + 0.1 < production["recall"] < 0.9
    assert scores["random"]["ndcg"] + 0.1 < production["ndcg"] < scores["perfect"]["ndcg"]
    # The corpus ceiling: at most perfect, at least what production (whose items may be new)
    # gets from it.
    assert production["recall"] <= scores["corpus_oracle"]["recall"] + 0.05
    assert scores["corpus_oracle"]["recall"] <= 1.0
    assert all(s["requests"] == len(rows) for s in scores.values())
    assert len(scores["production"]["per_request"]["recall"]) == len(rows)


def test_a_broken_policy_cannot_score_well(tiny_day):
    _, day, _ = tiny_day
    rows = np.arange(50)
    best = replay.oracle_policy(1)

    def one_best_item_repeated(positions, affinity):
        top = best(positions, affinity).top_k
        return replay.Answers(np.repeat(top, K, axis=1))

    def empty(positions, affinity):
        return replay.Answers(np.full((len(positions), K), PAD_ID, np.int64))

    def best_in_reverse(positions, affinity):
        return replay.Answers(replay.oracle_policy(K)(positions, affinity).top_k[:, ::-1])

    scores = replay.score_policies(
        day,
        rows,
        {"repeated": one_best_item_repeated, "empty": empty, "reversed": best_in_reverse},
        K,
    )
    assert scores["repeated"]["recall"] == pytest.approx(1 / K)
    assert scores["empty"]["recall"] == 0.0 and scores["empty"]["ndcg"] == 0.0
    # The right set in the wrong order: full recall, NDCG below 1.
    assert scores["reversed"]["recall"] == 1.0
    assert scores["reversed"]["ndcg"] < 0.999


def test_replay_config_checks_and_experiment_field():
    assert ReplayConfig.from_dict({"train_days": [0, 1]}).train_days == (0, 1)
    with pytest.raises(ValueError, match="unknown field"):
        ReplayConfig.from_dict({"kk": 3})
    with pytest.raises(ValueError, match="k <= k1"):
        ReplayConfig(k=20, k1=10)
    with pytest.raises(ValueError, match="unknown field"):
        ExperimentConfig(replay={"k2": 1})
    assert ExperimentConfig(replay={}).replay == {}
