"""Retrieval's top-K index options and the recall@K measurement the push relies on.

Small random embeddings, no training: the metric must give 1.0 to an exact index (ties at the
K-th score included), less to a broken one, and ScaNN configured to search everything and
re-score every item must answer exactly what brute force answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models.config import IndexConfig
from models.exporter import index_recall, tune_leaves_to_search
from models.scann_index import ScannIndex


def _corpus(n: int = 600, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    candidates = rng.normal(size=(n, d)).astype(np.float32)
    ids = rng.permutation(np.arange(10_000, 10_000 + n)).astype(np.int64)  # unsorted ids
    queries = rng.normal(size=(40, d)).astype(np.float32)
    return candidates, ids, queries


def _brute_force(candidates, ids, k):
    index = tfrs.layers.factorized_top_k.BruteForce(k=k)
    index.index(tf.constant(candidates), identifiers=tf.constant(ids))
    return index


def test_index_config_picks_the_kind_by_corpus_size_and_rejects_typos():
    auto = IndexConfig(scann_min_items=1000)
    assert auto.resolved_kind(999) == "brute_force"
    assert auto.resolved_kind(1000) == "scann"
    assert IndexConfig(kind="scann").resolved_kind(10) == "scann"
    assert IndexConfig(kind="brute_force").resolved_kind(10**9) == "brute_force"
    params = IndexConfig().scann_params(1_000_000, k=100)
    # Leaves to search unset: the export tunes it, starting from every leaf.
    assert params["num_leaves"] == 1000 and params["leaves_to_search"] == 1000
    assert params["scoring"] == "exact" and params["reordering_candidates"] == 1000
    assert params["partitioning"] == "auto"  # the export tries both
    assert params["query_groups"] == 4
    small = IndexConfig(num_leaves=50, num_leaves_to_search=80).scann_params(20, k=5)
    assert small["num_leaves"] == 20 and small["leaves_to_search"] == 20
    with pytest.raises(ValueError, match="scoring"):
        IndexConfig(scoring="lossy")
    with pytest.raises(ValueError, match="target_recall"):
        IndexConfig(target_recall=1.5)
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="annoy")
    with pytest.raises(ValueError, match="unknown field"):
        IndexConfig.from_dict({"num_leafs": 3})


def test_exact_index_has_recall_one_and_a_broken_index_less():
    candidates, ids, queries = _corpus()
    exact = index_recall(_brute_force(candidates, ids, 20), candidates, ids, queries)
    assert exact["recall_at_k"] == 1.0 and exact["recall_min"] == 1.0
    assert exact["recall_queries"] == len(queries)

    # Half the items' embeddings are wrong in the index: it cannot find them any more.
    corrupted = candidates.copy()
    corrupted[::2] = -corrupted[::2]
    broken = index_recall(_brute_force(corrupted, ids, 20), candidates, ids, queries)
    assert broken["recall_at_k"] < 0.8
    assert broken["recall_min"] <= broken["recall_p10"] <= broken["recall_at_k"]

    # An index returning ids that are not in the corpus scores nothing for them.
    stranger_ids = ids + 1_000_000
    stranger = index_recall(_brute_force(candidates, stranger_ids, 20), candidates, ids, queries)
    assert stranger["recall_at_k"] == 0.0


def test_ties_at_the_kth_score_do_not_count_as_misses():
    candidates, ids, queries = _corpus(n=200)
    # Every item twice (same embedding, different id): any of two tied copies is a right answer.
    doubled = np.concatenate([candidates, candidates])
    doubled_ids = np.concatenate([ids, ids + 500_000])
    k = 15  # odd: the top K must split a tied pair
    reverse = doubled[::-1].copy(), doubled_ids[::-1].copy()  # brute force keeps other copies
    report = index_recall(_brute_force(*reverse, k), doubled, doubled_ids, queries)
    assert report["recall_at_k"] == 1.0


@pytest.mark.parametrize(
    ("scoring", "partitioning"),
    [("exact", "direction"), ("exact", "l2"), ("quantized", "direction"), ("quantized", "l2")],
)
def test_scann_searching_everything_answers_as_brute_force(scoring, partitioning):
    candidates, ids, queries = _corpus(n=500)
    candidates += 3.0  # off-centre, as trained embeddings are: the centring must not show
    k = 10
    scann = ScannIndex(
        k=k,
        num_leaves=5,
        leaves_to_search=5,  # every partition
        scoring=scoring,
        partitioning=partitioning,
        reordering_candidates=500,  # quantized: every item re-scored exactly
    )
    scann.index(tf.constant(candidates), identifiers=tf.constant(ids))
    scann_scores, scann_ids = scann(tf.constant(queries))
    exact_scores, exact_ids = _brute_force(candidates, ids, k)(tf.constant(queries))
    np.testing.assert_array_equal(scann_ids.numpy(), exact_ids.numpy())
    # The returned scores are the dot products (the centre's shift added back).
    np.testing.assert_allclose(scann_scores.numpy(), exact_scores.numpy(), rtol=1e-5, atol=1e-4)
    assert index_recall(scann, candidates, ids, queries)["recall_at_k"] == 1.0

    # Searching one partition of 5 misses a good part of the top K; the setting is live.
    scann.set_leaves_to_search(1)
    assert index_recall(scann, candidates, ids, queries)["recall_at_k"] < 0.9
    with pytest.raises(ValueError, match="leaves_to_search"):
        scann.set_leaves_to_search(6)


def test_quantized_scoring_without_re_scoring_loses_recall():
    candidates, ids, queries = _corpus(n=500)
    coarse = ScannIndex(
        k=10,
        num_leaves=25,
        leaves_to_search=25,
        scoring="quantized",
        dimensions_per_block=4,
        reordering_candidates=10,
    )
    coarse.index(tf.constant(candidates), identifiers=tf.constant(ids))
    assert index_recall(coarse, candidates, ids, queries)["recall_at_k"] < 0.9


def test_tuning_picks_the_fewest_partitions_that_reach_the_target():
    candidates, ids, queries = _corpus(n=3000, d=8)
    scann = ScannIndex(k=20, num_leaves=50, leaves_to_search=50)
    scann.index(tf.constant(candidates), identifiers=tf.constant(ids))
    tried = tune_leaves_to_search(scann, candidates, ids, queries, target_recall=0.9)
    recalls = [step["recall_at_k"] for step in tried]
    assert recalls[-1] >= 0.9 and all(r < 0.9 for r in recalls[:-1])
    assert scann.leaves_to_search == tried[-1]["leaves_to_search"] < 50
    assert [s["leaves_to_search"] for s in tried] == sorted({s["leaves_to_search"] for s in tried})
    # Re-measured with the chosen setting: the same recall.
    assert index_recall(scann, candidates, ids, queries)["recall_at_k"] == recalls[-1]
    # Exact scoring of every partition is brute force: a target of 1.0 is always reached.
    tried = tune_leaves_to_search(scann, candidates, ids, queries, target_recall=1.0)
    assert tried[-1]["recall_at_k"] == 1.0 and len(tried) > len(recalls)


def test_query_groups_answer_in_query_order_whatever_the_batch_size():
    candidates, ids, queries = _corpus(n=2000)
    candidates += 1.0
    k = 10
    scann = ScannIndex(k=k, num_leaves=40, leaves_to_search=6, query_groups=4)
    scann.index(tf.constant(candidates), identifiers=tf.constant(ids))
    alone = [[t.numpy()[0] for t in scann(tf.constant(q[None]))] for q in queries[:9]]
    for batch in range(1, 5):  # each query in a group of its own: as if searched alone
        scores, got = (t.numpy() for t in scann(tf.constant(queries[:batch])))
        assert got.shape == (batch, k)
        np.testing.assert_array_equal(got, [a[1] for a in alone[:batch]])
        np.testing.assert_allclose(scores, [a[0] for a in alone[:batch]], rtol=1e-6)
    # Every partition searched, any batch size (groups of one, two and three queries, some
    # empty): brute force's answers, in query order.
    exact = ScannIndex(k=k, num_leaves=40, leaves_to_search=40, query_groups=4)
    exact.index(tf.constant(candidates), identifiers=tf.constant(ids))
    brute = _brute_force(candidates, ids, k)
    for batch in range(1, 10):
        q = tf.constant(queries[:batch])
        np.testing.assert_array_equal(exact(q)[1].numpy(), brute(q)[1].numpy())
    # Searching few partitions, the grouped index is approximate (the test can tell).
    assert index_recall(scann, candidates, ids, queries)["recall_at_k"] < 1.0
    with pytest.raises(ValueError, match="query_groups"):
        scann.set_query_groups(0)


def test_the_saved_query_groups_searches_are_not_chained(tmp_path):
    # tf.function orders the ops that share a resource handle unless they only read it: the
    # saved graph must leave the groups' searches free to run at once.
    candidates, ids, _ = _corpus(n=800)
    scann = ScannIndex(k=10, num_leaves=20, leaves_to_search=5, query_groups=3)
    scann.index(tf.constant(candidates), identifiers=tf.constant(ids))
    module = tf.Module()
    module.index = scann
    module.search = tf.function(
        lambda q: scann(q)[1], input_signature=[tf.TensorSpec([None, 8], tf.float32)]
    )
    module.search.get_concrete_function()
    tf.saved_model.save(
        module, str(tmp_path), options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
    )
    loaded = tf.saved_model.load(str(tmp_path))
    graph_def = loaded.search.get_concrete_function().graph.as_graph_def()
    searches = [
        (n.name, [i[1:] for i in n.input if i.startswith("^")])
        for n in [*graph_def.node, *(d for f in graph_def.library.function for d in f.node_def)]
        if n.op == "Scann>ScannSearchBatched"
    ]
    assert len(searches) == 3
    names = {name for name, _ in searches}
    assert all(not names & set(control) for _, control in searches), searches
    # And the loaded function still answers (one query, three groups, two empty).
    assert loaded.search(tf.constant(candidates[:1])).shape == (1, 10)
