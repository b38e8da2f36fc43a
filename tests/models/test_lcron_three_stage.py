"""LCRON at three stages against a NumPy transcription of the authors' three-stage code.

``ref_lcron3`` is written here from reading kwai/LCRON ``deep_components/loss/three_stage/
lcron.py`` (``compute_lcron_loss``, ``JointUltraLoss``, ``LsingleLoss``, ``LcronLossModel``)
with ``sorting.neuralsort``: per request 50 slots in five blocks of 10 (rerank_pos, rerank_neg,
rank_neg, coarse_neg, prerank_neg; ``dataset3.py`` labels 30 - rerank_index, then 8, 7, 6, 5),
the logits' NeuralSort at tau 50 over all 50 slots, the labels' NeuralSort at 1e-4 thresholded
at 0.001 (before it reaches the loss: a tied group of m labels puts a 1 in each of its m rows),
k = gt_num = 10 in every term, uncertainty weights at their initial 1. Our loss gets the same
requests in our layout (candidates in a random order, graded labels 4 + (10 - rerank_index)
/ 10, 3, 2, 1, 0) and must agree to 1e-5 in value and gradient (central finite differences in
float64, the column sums the authors detach held at the base point).

Full lists only: on a padded request the authors' code masks by position
(``sequence_mask(count)``: the first ``count`` slots, whatever block they are in), which our
position-free examples cannot reproduce.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.config import LossConfig

G, GROUPS = 10, 5
N = G * GROUPS
EPS = 1e-6
STAGES = 3


def np_neuralsort(s: np.ndarray, tau: float) -> np.ndarray:
    """sorting.neuralsort for one request: P[k, i], rows = ranks, softmax over items."""
    n = len(s)
    b = np.abs(s[:, None] - s[None, :]).sum(axis=1)  # B_i = sum_j |s_i - s_j|
    scaling = n + 1 - 2 * (np.arange(n) + 1)
    logits = (scaling[:, None] * s[None, :] - b[None, :]) / tau
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def ref_lcron3(logits, bench_labels, frozen=None):
    """The authors' total and terms; ``logits`` [3 (recall, prerank, rank), B, N]."""
    batch = bench_labels.shape[0]
    singles = np.zeros(STAGES)
    joint = 0.0
    columns = []
    for b in range(batch):
        label_p = (np_neuralsort(bench_labels[b], 1e-4) > 0.001).astype(float)
        up_label, down_label = label_p[:G].sum(0), label_p[G:].sum(0)
        up_prod, down_prod = np.ones(N), np.ones(N)
        mine = []
        for s in range(STAGES):
            p = np_neuralsort(logits[s, b], 50.0)
            c = p.sum(0) if frozen is None else frozen[b][s]
            mine.append(c)
            up = p[:G].sum(0) / (c + EPS)
            down = p[G:].sum(0) / (c + EPS)
            single = np.mean(-np.log(up + EPS) * up_label) + np.mean(
                -np.log(down + EPS) * down_label
            )
            singles[s] += single * float(N > G) / batch
            up_prod *= up
            down_prod *= 1 - down
        up_joint = np.mean(-np.log(up_prod + EPS) * up_label)
        down_joint = np.mean(-np.log(1 - down_prod + EPS) * np.clip(1 - up_label, 0, 1))
        joint += (up_joint + down_joint) / batch
        columns.append(mine)
    total = 0.5 * singles.sum() + joint + np.log(1.0)
    return total, joint, singles, columns


def make_requests(seed: int, batch: int = 2):
    """Both layouts of full three-stage requests, and our slot of each benchmark slot."""
    rng = np.random.default_rng(seed)
    bench_logits = rng.normal(size=(STAGES, batch, N)) * 3.0
    bench_labels = np.zeros((batch, N))
    ours_labels = np.zeros((batch, N))
    where = np.zeros((batch, N), int)
    for b in range(batch):
        rerank_index = rng.permutation(G)
        bench_labels[b, :G] = 30 - rerank_index
        for group in range(1, GROUPS):
            bench_labels[b, group * G : (group + 1) * G] = 9 - group  # 8, 7, 6, 5
        where[b] = rng.permutation(N)
        graded = np.r_[4 + (G - rerank_index) / G, np.repeat([3.0, 2.0, 1.0, 0.0], G)]
        ours_labels[b, where[b]] = graded
    return bench_logits, bench_labels, ours_labels, where


def ours(layer, bench_logits, ours_labels, where):
    batch = ours_labels.shape[0]
    stage_logits = []
    for s in range(STAGES):
        x = np.zeros((batch, N))
        for b in range(batch):
            x[b, where[b]] = bench_logits[s, b]
        stage_logits.append(tf.Variable(x.astype(np.float32)))
    mask = tf.ones((batch, N))
    with tf.GradientTape() as tape:
        terms = layer(stage_logits, tf.constant(ours_labels, tf.float32), mask)
    grads = tape.gradient(terms["loss"], stage_logits)
    # Our gradient at each benchmark slot.
    back = np.stack(
        [np.stack([g.numpy()[b, where[b]] for b in range(batch)]) for g in grads]
    )  # [3, B, N]
    return terms, back


@pytest.mark.parametrize("impl", ["dense", "blocked"])
@pytest.mark.parametrize("seed", [0, 1])
def test_lcron_matches_the_authors_three_stage_code(impl, seed):
    bench_logits, bench_labels, ours_labels, where = make_requests(seed)
    layer = losses.get(LossConfig(lcron_impl=impl), num_stages=3)  # "auto": three-stage code's
    assert layer.single_weights == "per_tied_rank"
    terms, grad = ours(layer, bench_logits, ours_labels, where)
    total, joint, singles, columns = ref_lcron3(bench_logits, bench_labels)
    np.testing.assert_allclose(terms["l_e2e"].numpy(), joint, rtol=1e-5)
    for s, name in enumerate(("retrieval", "stage1", "ranking")):
        np.testing.assert_allclose(terms[f"l_single_{name}"].numpy(), singles[s], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].numpy(), total, rtol=1e-5)
    # Gradient: central differences of the reference, detached column sums held fixed.
    h = 1e-6
    expected = np.zeros_like(bench_logits)
    for index in np.ndindex(*bench_logits.shape):
        plus, minus = bench_logits.copy(), bench_logits.copy()
        plus[index] += h
        minus[index] -= h
        expected[index] = (
            ref_lcron3(plus, bench_labels, columns)[0] - ref_lcron3(minus, bench_labels, columns)[0]
        ) / (2 * h)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_the_three_stage_codes_single_term_weighs_a_tied_group_per_rank():
    """The accident the three-stage code has and the two-stage code has not: a negative of a
    full tied group of 10 weighs 10 in L_single. ``per_item`` (the two-stage code's) is its
    own variant; with distinct labels both are the same."""
    bench_logits, bench_labels, ours_labels, where = make_requests(3)
    tied = losses.get(LossConfig(lcron_single_weights="per_tied_rank"), num_stages=3)
    per_item = losses.get(LossConfig(lcron_single_weights="per_item"), num_stages=3)
    a, _ = ours(tied, bench_logits, ours_labels, where)
    b, _ = ours(per_item, bench_logits, ours_labels, where)
    assert a["l_single_ranking"].numpy() > 2 * b["l_single_ranking"].numpy()
    np.testing.assert_allclose(a["l_e2e"].numpy(), b["l_e2e"].numpy(), rtol=1e-6)
    distinct = np.argsort(np.argsort(-ours_labels, axis=1), axis=1).astype(np.float32)
    distinct = N - distinct  # every label distinct, same order
    c, _ = ours(tied, bench_logits, distinct, where)
    d, _ = ours(per_item, bench_logits, distinct, where)
    np.testing.assert_allclose(c["loss"].numpy(), d["loss"].numpy(), rtol=1e-6)
    # Two stages keep the two-stage code's weights by default.
    assert losses.get(LossConfig(), num_stages=2).single_weights == "per_item"


def test_config_names_the_losss_weightings():
    from models.config import LCRON_SINGLE_WEIGHTS
    from models.losses import lcron

    assert set(LCRON_SINGLE_WEIGHTS) == {"auto", *lcron.SINGLE_WEIGHTS}
