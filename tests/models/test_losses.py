"""LCRON's terms against a NumPy transcription of the issue's formulas, and the Keras layers."""

import json

import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.config import LOSS_METHODS, LossConfig
from models.losses import sorting, targets

EPS = 1e-6


def paper_labels(batch: int) -> np.ndarray:
    """RecFlow-style labels: 10 rank_pos (3 + (10 - rank_index) / 10), then 10 of each group."""
    row = np.r_[3 + (10 - np.arange(10)) / 10, np.full(10, 2.0), np.ones(10), np.zeros(10)]
    return np.tile(row, (batch, 1)).astype(np.float32)


# --- a NumPy transcription of the definitions, loop by loop -------------------------


def np_neural_sort(s, m, tau):
    n_list = len(s)
    v = np.flatnonzero(m)
    n = len(v)
    perm = np.zeros((n_list, n_list))
    for j in range(1, n + 1):
        logits = np.array(
            [((n + 1 - 2 * j) * s[i] - sum(abs(s[i] - s[k]) for k in v)) / tau for i in v]
        )
        e = np.exp(logits - logits.max())
        perm[j - 1, v] = e / e.sum()
    return perm


def np_terms(stages, labels, mask, gt_num, tau, ks=None):
    batch, n_list = labels.shape
    ks = ks or [gt_num] * len(stages)
    singles = np.zeros(len(stages))
    e2e = 0.0
    for b in range(batch):
        valid = np.flatnonzero(mask[b])
        order = sorted(valid, key=lambda i: (-labels[b, i], i))
        y = np.zeros(n_list)
        y[order[:gt_num]] = 1
        q = np.ones(n_list)
        q_neg = np.ones(n_list)
        for s, (scores, k) in enumerate(zip(stages, ks, strict=False)):
            perm = np_neural_sort(scores[b], mask[b], tau)
            c = perm.sum(0)
            p = perm[:k].sum(0) / (c + EPS)
            r = perm[k:].sum(0) / (c + EPS)
            item = -np.log(p + EPS) * y * mask[b] - np.log(r + EPS) * (1 - y) * mask[b]
            if len(valid) > k:
                singles[s] += item.mean() / batch
            q, q_neg = q * p, q_neg * (1 - r)
        item = (-np.log(q + EPS) * y - np.log(1 - q_neg + EPS) * (1 - y)) * mask[b]
        e2e += item.mean() / batch
    return e2e, singles


def test_lcron_loss_terms_match_the_formulas():
    rng = np.random.default_rng(0)
    batch, n_list = 3, 12
    labels = rng.integers(0, 4, size=(batch, n_list)).astype(np.float32)
    labels[:, :3] += np.array([0.9, 0.8, 0.7])  # distinct top labels
    mask = np.ones((batch, n_list), np.float32)
    mask[1, 8:] = 0
    mask[2, 4:] = 0  # only 4 valid: no more than k, L_single is 0 for it
    retrieval = rng.normal(size=(batch, n_list)).astype(np.float32) * 30
    ranking = rng.normal(size=(batch, n_list)).astype(np.float32) * 30
    terms = losses.lcron_loss_terms(retrieval, ranking, labels, mask, gt_num=4, tau=5.0)
    assert set(terms) == {"l_single_retrieval", "l_single_ranking", "l_e2e"}
    e2e, singles = np_terms([retrieval, ranking], labels, mask, gt_num=4, tau=5.0)
    np.testing.assert_allclose(terms["l_e2e"].numpy(), e2e, rtol=1e-4)
    np.testing.assert_allclose(terms["l_single_retrieval"].numpy(), singles[0], rtol=1e-4)
    np.testing.assert_allclose(terms["l_single_ranking"].numpy(), singles[1], rtol=1e-4)


def test_per_stage_k_and_three_stages_match_the_formulas():
    rng = np.random.default_rng(1)
    labels = rng.normal(size=(2, 9)).astype(np.float32)
    mask = np.ones((2, 9), np.float32)
    stages = [rng.normal(size=(2, 9)).astype(np.float32) for _ in range(3)]
    terms = losses.lcron_cascade_terms(stages, labels, mask, gt_num=2, ks=(6, 4, 2), tau=0.5)
    e2e, singles = np_terms(stages, labels, mask, gt_num=2, tau=0.5, ks=[6, 4, 2])
    assert set(terms) == {"l_e2e", "l_single_retrieval", "l_single_stage1", "l_single_ranking"}
    np.testing.assert_allclose(terms["l_e2e"].numpy(), e2e, rtol=1e-4)
    np.testing.assert_allclose(terms["l_single_stage1"].numpy(), singles[1], rtol=1e-4)


def test_single_term_is_zero_when_no_more_than_k_valid_items():
    mask = np.zeros((2, 40), np.float32)
    mask[:, :10] = 1  # exactly k = gt_num = 10 valid
    logits = np.random.default_rng(2).normal(size=(2, 40)).astype(np.float32)
    terms = losses.lcron_loss_terms(logits, logits, paper_labels(2), mask)
    assert terms["l_single_retrieval"].numpy() == 0.0
    assert terms["l_single_ranking"].numpy() == 0.0


@pytest.mark.parametrize("sort_op", ["neural_sort", "soft_sort"])
def test_finite_values_and_gradients_for_extreme_logits_and_empty_rows(sort_op):
    rng = np.random.default_rng(3)
    batch = 4
    mask = np.ones((batch, 40), np.float32)
    mask[1, 25:] = 0
    mask[2] = 0  # all padding
    retrieval = tf.Variable(rng.choice([-1e4, 1e4], size=(batch, 40)).astype(np.float32))
    ranking = tf.Variable(rng.normal(size=(batch, 40)).astype(np.float32) * 1e4)
    with tf.GradientTape() as tape:
        terms = losses.lcron_loss_terms(
            retrieval, ranking, paper_labels(batch), mask, sort_op=sort_op
        )
        total = tf.add_n(list(terms.values()))
    grads = tape.gradient(total, [retrieval, ranking])
    for value in terms.values():
        assert np.isfinite(value.numpy())
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))


def test_e2e_gradient_reaches_both_stages():
    rng = np.random.default_rng(4)
    retrieval = tf.Variable(rng.normal(size=(2, 40)).astype(np.float32) * 20)
    ranking = tf.Variable(rng.normal(size=(2, 40)).astype(np.float32) * 20)
    with tf.GradientTape() as tape:
        e2e = losses.lcron_loss_terms(retrieval, ranking, paper_labels(2), np.ones((2, 40)))[
            "l_e2e"
        ]
    for grad in tape.gradient(e2e, [retrieval, ranking]):
        assert np.abs(grad.numpy()).max() > 1e-4


def test_e2e_negative_part_has_the_authors_q_prime_gradient():
    """L_e2e's negative part is -log(1 - q'), q' = prod_s (1 - r_s): q' equals q in value but
    not in gradient (c is held constant), and the gradient must be q''s, not q's."""
    rng = np.random.default_rng(7)
    gt_num, tau = 3, 5.0
    labels = rng.normal(size=(2, 12)).astype(np.float32)
    mask = np.ones((2, 12), np.float32)
    mask[1, 9:] = 0
    logits = [tf.Variable(rng.normal(size=(2, 12)).astype(np.float32) * 5) for _ in "ab"]

    def reference(negative_form):
        y = targets.ground_truth_indicator(labels, mask, gt_num)
        q = q_prime = 1.0
        for stage in logits:
            perm = sorting.neural_sort(stage, mask, tau)
            c = tf.stop_gradient(tf.reduce_sum(perm, -2))
            q = q * tf.reduce_sum(perm[:, :gt_num], -2) / (c + EPS)
            q_prime = q_prime * (1.0 - tf.reduce_sum(perm[:, gt_num:], -2) / (c + EPS))
        negative = q_prime if negative_form == "q_prime" else q
        item = -tf.math.log(q + EPS) * y - tf.math.log(1.0 - negative + EPS) * (1.0 - y)
        return tf.reduce_mean(tf.reduce_mean(item * mask, -1))

    def gradient(fn):
        with tf.GradientTape() as tape:
            value = fn()
        return np.concatenate([g.numpy().ravel() for g in tape.gradient(value, logits)])

    ours = gradient(
        lambda: losses.lcron_loss_terms(*logits, labels, mask, gt_num=gt_num, tau=tau)["l_e2e"]
    )
    with_q_prime = gradient(lambda: reference("q_prime"))
    with_q = gradient(lambda: reference("q"))
    np.testing.assert_allclose(ours, with_q_prime, rtol=1e-4, atol=1e-6)
    assert np.abs(with_q - with_q_prime).max() > 1e-3  # the two forms are distinguishable


def _plackett_luce_rankings(scores, samples, rng):
    """[samples, n] rankings (best first) drawn from Plackett-Luce(scores) via Gumbel-max."""
    return np.argsort(-(scores + rng.gumbel(size=(samples, len(scores)))), axis=1)


def _cascade_survival(s1, s2, k1, k2, samples, rng):
    """Monte Carlo share of samples in which each item survives both stages."""
    n_list = len(s1)
    kept1 = _plackett_luce_rankings(s1, samples, rng)[:, :k1]
    received = np.zeros((samples, n_list), bool)
    np.put_along_axis(received, kept1, True, axis=1)
    ranked2 = np.argsort(-np.where(received, s2 + rng.gumbel(size=(samples, n_list)), -np.inf), 1)
    survive = np.zeros((samples, n_list), bool)
    np.put_along_axis(survive, ranked2[:, :k2], True, axis=1)
    return survive.mean(0)


def _expected_permutation(scores, samples, rng):
    """E[hard permutation matrix] under Plackett-Luce: rows = ranks, columns = items."""
    rankings = _plackett_luce_rankings(scores, samples, rng)
    perm = np.zeros((len(scores), len(scores)))
    for rank in range(len(scores)):
        perm[rank] = np.bincount(rankings[:, rank], minlength=len(scores)) / samples
    return perm


def test_lower_bound_never_exceeds_monte_carlo_survival():
    """q_i = p_1(i) p_2(i) computed by our code is below the cascade's survival probability.

    Each stage ranks by a Plackett-Luce model of its scores; an item survives if stage 1 keeps
    it in its top-k1 of the list and stage 2 in its top-k2 of stage 1's survivors. Feeding the
    stages' expected permutation matrices (one sample set) through the loss's top-k
    probabilities and product gives q; the survival comes from an independent sample set.
    The paper's bound (eq. 5) says q_i <= survival_i, strictly when the stages disagree.
    """
    rng = np.random.default_rng(5)
    n_list, k1, k2, samples = 8, 5, 3, 20000
    strict_gaps = []
    for _ in range(3):
        s1, s2 = rng.normal(size=n_list) * 2, rng.normal(size=n_list) * 2
        perms = [
            tf.constant(_expected_permutation(s, samples, rng)[None], tf.float32) for s in (s1, s2)
        ]
        q = losses.survival_lower_bound_from_perms(perms, (k1, k2)).numpy()[0]
        survival = _cascade_survival(s1, s2, k1, k2, samples, rng)
        slack = 4 * np.sqrt(survival * (1 - survival) / samples) + 1e-3
        assert np.all(q <= survival + slack), (q, survival)
        strict_gaps.append((survival - q).max())
    assert max(strict_gaps) > 0.05  # the bound is not tight everywhere: the test can tell


def test_neural_sort_bound_is_below_the_hard_cascade_in_the_hard_limit():
    """At a small tau NeuralSort's q is the deterministic cascade's bound: q_i <= 1[i survives]."""
    rng = np.random.default_rng(6)
    n_list, k1, k2 = 10, 6, 3
    s1, s2 = rng.permutation(n_list) * 1.0, rng.permutation(n_list) * 1.0
    q = losses.survival_lower_bound([s1[None], s2[None]], np.ones((1, n_list)), (k1, k2), tau=1e-3)
    received = np.argsort(-s1)[:k1]
    survivors = received[np.argsort(-s2[received])[:k2]]
    survive = np.isin(np.arange(n_list), survivors).astype(float)
    in_both_top_k = np.isin(np.arange(n_list), np.argsort(-s1)[:k1]) & np.isin(
        np.arange(n_list), np.argsort(-s2)[:k2]
    )
    np.testing.assert_allclose(q.numpy()[0], in_both_top_k.astype(float), atol=1e-4)
    assert np.all(q.numpy()[0] <= survive + 1e-4)


# --- the Keras layers --------------------------------------------------------------------


def _inputs(batch=3, n_list=40, seed=0):
    """Lists as the ingestion lays them out: 4 stage groups of n_list // 4 (RecFlow's labels
    for 40), spare slots padding; the last request half padding."""
    rng = np.random.default_rng(seed)
    g = n_list // 4
    row = np.r_[3 + (g - np.arange(g)) / g, np.full(g, 2.0), np.ones(g), np.zeros(n_list - 3 * g)]
    mask = np.ones((batch, n_list), np.int64)
    mask[:, 4 * g :] = 0
    mask[-1, n_list // 2 :] = 0
    stages = [tf.constant(rng.normal(size=(batch, n_list)), tf.float32) for _ in range(2)]
    return stages, np.tile(row, (batch, 1)).astype(np.float32), mask


def test_every_baseline_is_selectable_by_name():
    assert set(losses.LOSSES) == {
        "lcron",
        "bce",
        "icc",
        "rankflow",
        "fs_ranknet",
        "fs_lambdaloss",
        "arf",
        "arf_v2",
    }
    assert all(losses.get(LossConfig(method=m)).method == m for m in losses.LOSSES)
    # The configuration's own list (checked without TensorFlow) is the registry's.
    assert set(LOSS_METHODS) == set(losses.LOSSES)


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_every_loss_is_finite_for_extreme_logits_and_empty_rows(method):
    rng = np.random.default_rng(3)
    mask = np.ones((4, 40), np.float32)
    mask[1, 25:] = 0
    mask[2] = 0  # all padding
    stages = [
        tf.Variable(rng.choice([-1e4, 1e4], size=(4, 40)).astype(np.float32)),
        tf.Variable(rng.normal(size=(4, 40)).astype(np.float32) * 1e4),
    ]
    layer = losses.get(LossConfig(method=method))
    with tf.GradientTape() as tape:
        terms = layer(stages, paper_labels(4), mask)
    assert all(np.isfinite(v.numpy()) for v in terms.values()), terms
    for grad in tape.gradient(terms["loss"], stages):
        assert grad is not None and np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_every_loss_returns_a_finite_total_whose_gradient_reaches_every_stage(method):
    stages, labels, mask = _inputs()
    layer = losses.get(LossConfig(method=method))
    assert isinstance(layer, losses.CascadeLoss)
    variables = [tf.Variable(s) for s in stages]
    with tf.GradientTape() as tape:
        terms = layer(variables, labels, mask)
    assert "loss" in terms and len(terms) >= 2
    assert all(np.isfinite(v.numpy()) and v.shape == () for v in terms.values())
    for grad in tape.gradient(terms["loss"], variables):
        assert grad is not None and np.abs(grad.numpy()).max() > 0


def test_lcron_total_combines_terms_with_uncertainty_weights():
    stages, labels, mask = _inputs()
    layer = losses.get(LossConfig())
    terms = layer(stages, labels, mask)
    # w = 1 at initialisation: total = e2e + 0.5 * (single_r + single_k) + log(1 * 1)
    expected = terms["l_e2e"] + 0.5 * (terms["l_single_retrieval"] + terms["l_single_ranking"])
    np.testing.assert_allclose(terms["loss"].numpy(), expected.numpy(), rtol=1e-6)
    assert [w.name.split("/")[-1].split(":")[0] for w in layer.trainable_weights] == [
        "uwl_w_retrieval",
        "uwl_w_ranking",
    ]
    layer.uwl_weights[0].assign(2.0)
    terms = layer(stages, labels, mask)
    expected = (
        terms["l_e2e"]
        + 0.125 * terms["l_single_retrieval"]
        + 0.5 * terms["l_single_ranking"]
        + np.log(2.0)
    )
    np.testing.assert_allclose(terms["loss"].numpy(), expected.numpy(), rtol=1e-6)


def test_lcron_ablations_and_fixed_weights():
    stages, labels, mask = _inputs()
    ref = losses.lcron_loss_terms(*stages, labels, mask)
    only_e2e = losses.get(LossConfig(use_single=False))(stages, labels, mask)
    np.testing.assert_allclose(only_e2e["loss"].numpy(), ref["l_e2e"].numpy(), rtol=1e-6)
    fixed = losses.get(LossConfig(weighting="fixed", fixed_weights=(2.0, 3.0)))
    assert not fixed.trainable_weights
    expected = ref["l_e2e"] + 2 * ref["l_single_retrieval"] + 3 * ref["l_single_ranking"]
    np.testing.assert_allclose(
        fixed(stages, labels, mask)["loss"].numpy(), expected.numpy(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="both be False"):
        losses.get(LossConfig(use_e2e=False, use_single=False))


def test_lcron_three_stages_is_one_config_away():
    stages, labels, mask = _inputs()
    layer = losses.get(LossConfig(fixed_weights=(1.0, 1.0, 1.0)), num_stages=3)
    terms = layer([*stages, stages[0] * 2], labels, mask)
    assert {"l_single_retrieval", "l_single_stage1", "l_single_ranking", "uwl_w_stage1"} <= set(
        terms
    )
    with pytest.raises(ValueError, match="expected 3 stage logits"):
        layer(stages, labels, mask)


def test_bad_config_and_inputs_are_rejected_by_name():
    with pytest.raises(ValueError, match="LossConfig.method: unknown value 'lcorn'"):
        LossConfig(method="lcorn")
    with pytest.raises(ValueError, match="LossConfig.sort_op: unknown value 'quick_sort'"):
        LossConfig(sort_op="quick_sort")
    with pytest.raises(ValueError, match="stage_top_k"):
        losses.get(LossConfig(stage_top_k=(10,)))
    with pytest.raises(ValueError, match="unknown field"):
        LossConfig.from_dict({"tua": 1.0})
    stages, labels, mask = _inputs()
    with pytest.raises(ValueError, match=r"stage_logits\[1\]"):
        losses.get(LossConfig(method="bce"))([stages[0], stages[1][:, :5]], labels, mask)


def test_works_in_a_graph_with_unknown_list_size():
    layer = losses.get(LossConfig())
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec, spec, spec])
    def total(a, b, labels, mask):
        return layer([a, b], labels, mask)["loss"]

    stages, labels, mask = _inputs(n_list=40)
    eager = layer(stages, labels, mask)["loss"].numpy()
    graph = total(*stages, labels, tf.cast(mask, tf.float32)).numpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5)
    stages, labels, mask = _inputs(n_list=30)
    assert np.isfinite(total(*stages, labels, tf.cast(mask, tf.float32)).numpy())


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_serialization_round_trip(method):
    config = LossConfig(method=method, tau=7.0, gt_num=8)
    layer = losses.get(config, stage_keep=(25, 15))
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    stages, labels, mask = _inputs()
    np.testing.assert_allclose(
        restored(stages, labels, mask)["loss"].numpy(),
        layer(stages, labels, mask)["loss"].numpy(),
        rtol=1e-6,
    )


_NON_DEFAULT = {
    "lcron": LossConfig(
        weighting="fixed", fixed_weights=(2.0, 3.0), stage_top_k=(12, 6), sort_op="soft_sort"
    ),
}


@pytest.mark.parametrize("method", [*sorted(losses.LOSSES), "lcron_fixed"])
def test_json_config_round_trip_and_tf_function(method):
    """get_config -> JSON -> from_config gives the same layer, which runs in a tf.function
    with unknown shapes and agrees with the original eagerly."""
    config = _NON_DEFAULT["lcron"] if method == "lcron_fixed" else LossConfig(method=method)
    layer = losses.get(config)
    restored = type(layer).from_config(json.loads(json.dumps(layer.get_config())))
    assert restored.get_config() == layer.get_config()
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec] * 4)
    def total(a, b, labels, mask):
        return restored([a, b], labels, mask)["loss"]

    for n_list in (40, 30):
        stages, labels, mask = _inputs(n_list=n_list)
        mask = tf.cast(mask, tf.float32)
        np.testing.assert_allclose(
            total(*stages, labels, mask).numpy(),
            layer(stages, labels, mask)["loss"].numpy(),
            rtol=1e-5,
        )


def test_uwl_weights_train_with_the_model():
    """The loss layer, held by a model, contributes its weights to model.trainable_variables."""

    class Holder(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.retrieval = tf.keras.layers.Dense(1)
            self.ranking = tf.keras.layers.Dense(1)
            self.cascade_loss = losses.get(LossConfig())

    model = Holder()
    x = tf.random.stateless_normal([2, 40, 3], seed=[1, 2])
    _, labels, mask = _inputs(batch=2)
    optimizer = tf.keras.optimizers.Adam(0.1)
    with tf.GradientTape() as tape:
        stages = [tf.squeeze(model.retrieval(x), -1), tf.squeeze(model.ranking(x), -1)]
        loss = model.cascade_loss(stages, labels, mask)["loss"]
    names = {v.name for v in model.trainable_variables}
    assert any("uwl_w_retrieval" in n for n in names)
    optimizer.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=False)
    )
    assert float(model.cascade_loss.uwl_weights[0]) != 1.0


def test_lcron_compiles_with_xla_and_agrees_with_eager():
    layer = losses.get(LossConfig())
    stages, labels, mask = _inputs(batch=2, n_list=12)
    mask = tf.cast(mask, tf.float32)

    @tf.function(jit_compile=True)
    def compiled(a, b, labels, mask):
        return layer([a, b], labels, mask)

    xla = compiled(*stages, labels, mask)
    eager = layer(stages, labels, mask)
    for name, value in eager.items():
        np.testing.assert_allclose(xla[name].numpy(), value.numpy(), rtol=1e-4, err_msg=name)
