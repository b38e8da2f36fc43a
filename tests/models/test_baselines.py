"""The baselines against NumPy transcriptions of the authors' definitions, value and gradient.

Each ``ref_*`` below is written here, from reading kwai/LCRON ``deep_components/loss/two_stage``
(file and function named in each docstring) and the settings ``run_train2.py`` passes. It works
on the authors' own layout: per request four blocks of G = 10 slots (rank_pos, rank_neg,
coarse_neg, prerank_neg), real items first in each block, padding slots after them holding the
padding's logit and their block's label (``dataset2.py``: 30 - rank_index for rank_pos, a
padded rank_pos slot counting rank_index 0; 7, 6, 5 for the negative blocks).

Our losses get the same requests in our layout: real candidates at random positions (stage
groups interleaved, the order inside a group kept), padding slots anywhere, our graded labels
(rank_pos 3 + (10 - rank_index) / 10, then 2, 1, 0; padding 0). Values and gradients must agree
to 1e-5. Reference gradients are central finite differences in float64; what the authors
detach or select (top-k indices, LambdaLoss's pair weights, ARF-v2's column sums, RankFlow's
distillation target) is computed at the base point and held fixed, as autograd does. Every
padding slot of a request shares one logit (all its features are padding), so the padding's
gradient is compared as the sum over its slots: what reaches the model.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.config import LossConfig
from models.losses import baselines
from models.losses.baselines import layout

G = 10
N = 4 * G
EPS = 1e-6
# Per request: real items in (rank_pos, rank_neg, coarse_neg, prerank_neg); two with padding.
COUNTS = ((10, 10, 10, 10), (7, 10, 9, 10), (10, 4, 10, 6))


def softplus(x):
    return np.logaddexp(0.0, x)


def bce(logit, target):
    """PyTorch's binary_cross_entropy_with_logits, element-wise."""
    return softplus(logit) - target * logit


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# --- the requests, in both layouts ------------------------------------------------------------


@dataclasses.dataclass
class Case:
    # the authors' layout, [B, N]
    xr: np.ndarray
    xp: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    # ours, [B, L]
    ours_xr: np.ndarray
    ours_xp: np.ndarray
    ours_labels: np.ndarray
    ours_mask: np.ndarray
    where: np.ndarray  # [B, N]: our slot of each real benchmark slot, -1 for padding slots


def make_case(seed: int, counts=COUNTS, list_size: int = N) -> Case:
    rng = np.random.default_rng(seed)
    batch = len(counts)
    shape = (batch, N)
    xr, xp = np.zeros(shape), np.zeros(shape)
    mask, labels = np.zeros(shape), np.zeros(shape)
    ours = {k: np.zeros((batch, list_size)) for k in ("xr", "xp", "labels", "mask")}
    where = np.full(shape, -1)
    for b, count in enumerate(counts):
        # Distinct logits 0.05 apart (ICC's gates are sigmoids of slope 1000: no item sits on
        # a gate's edge but the k-th itself); the last value is the padding's.
        grid_r = rng.permutation(np.arange(-N, N + 1))[: N + 1] * 0.05
        grid_p = rng.permutation(np.arange(-N, N + 1))[: N + 1] * 0.05
        pad_r, pad_p = grid_r[-1], grid_p[-1]
        tags = []
        for group, n_real in enumerate(count):
            block = slice(group * G, (group + 1) * G)
            mask[b, block][:n_real] = 1
            xr[b, block] = np.where(mask[b, block] > 0, grid_r[block], pad_r)
            xp[b, block] = np.where(mask[b, block] > 0, grid_p[block], pad_p)
            if group == 0:
                rank_index = np.zeros(G)
                rank_index[:n_real] = rng.permutation(G)[:n_real]
                labels[b, block] = 30 - rank_index
            else:
                labels[b, block] = (7, 6, 5)[group - 1]
            tags += [group] * n_real
        # Our layout: groups interleaved at random, order inside a group kept; padding anywhere.
        tags = rng.permutation(tags)
        slots = np.sort(rng.choice(list_size, size=len(tags), replace=False))
        ours["xr"][b], ours["xp"][b] = pad_r, pad_p
        seen = [0, 0, 0, 0]
        for slot, group in zip(slots, tags, strict=True):
            position = group * G + seen[group]
            seen[group] += 1
            where[b, position] = slot
            ours["xr"][b, slot], ours["xp"][b, slot] = xr[b, position], xp[b, position]
            ours["mask"][b, slot] = 1
            if group == 0:
                ours["labels"][b, slot] = 3 + (G - (30 - labels[b, position])) / G
            else:
                ours["labels"][b, slot] = 3 - group
    return Case(xr, xp, mask, labels, ours["xr"], ours["xp"], ours["labels"], ours["mask"], where)


# --- the references -------------------------------------------------------------------------


def ref_bce(xr, xp, mask, labels, frozen=None):
    """two_stage/bce.py compute_bce_metrics: weight = mask, reduction "mean" over all slots;
    ranking (prerank_model) on the first two blocks only, target 1 for block 0."""
    batch = xr.shape[0]
    target = np.r_[np.ones(G), np.zeros(3 * G)]
    retrieval = (mask * bce(xr, target)).sum() / (batch * N)
    ranking = (mask[:, : 2 * G] * bce(xp[:, : 2 * G], target[: 2 * G])).sum() / (batch * 2 * G)
    return retrieval + ranking


def ref_icc(xr, xp, mask, labels, frozen=None, clean=False, keep=(30, 20), sigma=1e-3):
    """two_stage/icc.py compute_icc_metrics: gates around the k-th largest score (both with
    joint_recall_k), ensemble score, BCE over pairs i < j with target [l_i > l_j], mean over
    batch * N * N, mask unused. ``clean``: ranking's own cut-off, real items only, no ties."""
    batch = xr.shape[0]
    total = 0.0
    for b in range(batch):
        real = mask[b] > 0

        def gate(x, k, real=real):
            pool = np.sort(x[real] if clean else x)[::-1]
            kappa = pool[k - 1] if k <= len(pool) else -np.inf
            return sigmoid((x - kappa) / sigma)

        g_r = gate(xr[b], keep[0])
        g_k = gate(xp[b], keep[1] if clean else keep[0])
        score = (1 - g_r) * xr[b] + g_r * g_k * xp[b]
        i, j = np.triu_indices(N, k=1)  # every pair i < j
        counted = np.ones(len(i), bool)
        if clean:
            counted = real[i] & real[j] & (labels[b, i] != labels[b, j])
        pair = bce(score[i] - score[j], labels[b, i] > labels[b, j])
        total += pair[counted].sum()
    return total / (batch * N * N)


def rankflow_frozen(xr, xp, mask, labels, clean=False, keep=30):
    """RankFlow's non-differentiable parts at the base point: retrieval's top-k indices
    (torch.topk; ties: the lower position first) and the detached ranking logits."""
    key = np.where(mask > 0, xr, -np.inf) if clean else xr
    top = np.argsort(-key, axis=1, kind="stable")[:, :keep]
    return top, xp.copy()


def ref_rankflow(xr, xp, mask, labels, frozen, clean=False):
    """two_stage/rankflow.py compute_rankflow_metrics with alpha = 0: BCE of retrieval on all
    slots (target 1 on block 0, mask unused), BCE of ranking on retrieval's top 30, MSE of the
    detached ranking logits against retrieval's there; all "mean". ``clean``: real items only."""
    top, xp_detached = frozen
    target = np.tile(np.r_[np.ones(G), np.zeros(3 * G)], (xr.shape[0], 1))
    real = mask if clean else np.ones_like(mask)
    l_r = (bce(xr, target) * real).sum() / real.sum()
    pick = np.take_along_axis
    top_real = pick(real, top, 1)
    l_k = (bce(pick(xp, top, 1), pick(target, top, 1)) * top_real).sum() / top_real.sum()
    gap = pick(xp_detached, top, 1) - pick(xr, top, 1)
    l_d = (gap**2 * top_real).sum() / top_real.sum()
    return l_r + l_k + l_d


def ref_fs_ranknet(xr, xp, mask, labels, frozen=None, clean=False):
    """two_stage/fs_ranknet.py compute_fsltr_loss_all_by_rank, per stage: anchors of block a
    against every slot of the blocks below, weight = the anchor's mask, summed over the batch
    and divided by (slots below) * (real anchors). ``clean``: both masks, / the pair count."""
    total = 0.0
    for x in (xr, xp):
        for a in range(3):
            anchors, anchor_mask = x[:, a * G : (a + 1) * G], mask[:, a * G : (a + 1) * G]
            below, below_mask = x[:, (a + 1) * G :], mask[:, (a + 1) * G :]
            pair = softplus(-(anchors[:, :, None] - below[:, None, :]))  # BCE with target 1
            weight = anchor_mask[:, :, None] * (below_mask[:, None, :] if clean else 1.0)
            if clean:
                total += (pair * weight).sum() / (weight * np.ones_like(pair)).sum()
            else:
                total += (pair * weight).sum() / ((3 - a) * G * anchor_mask.sum())
    return total


def lambda_weights(x, labels, mask, clean=False, topn=30, smooth=0.8):
    """fs_lambdaloss.py compute_lambda_loss's detached pair weights (gain = label, discount
    1 / ln(1 + rank)), at the settings run_train2.py passes (topn 30, smooth_fraction 0.8)."""
    discount = lambda r: 1.0 / np.log(1.0 + r)  # noqa: E731
    weights = []
    for b in range(x.shape[0]):
        key = np.where(mask[b] > 0, x[b], -np.inf) if clean else x[b]
        rank = np.empty(N)
        rank[np.argsort(-key, kind="stable")] = np.arange(1, N + 1)
        gain = labels[b] * (mask[b] if clean else 1.0)
        idcg = (np.sort(gain)[::-1] * discount(np.arange(1, N + 1))).sum()
        gain = gain / idcg if idcg > 0 else 0 * gain
        diff = np.abs(rank[:, None] - rank[None, :])
        near = (rank[:, None] <= topn) | (rank[None, :] <= topn)
        with np.errstate(divide="ignore"):
            u = np.where((diff > 0) & near, np.abs(discount(diff) - discount(diff + 1)), 0.0)
        top = np.where(rank > topn, 0.0, discount(rank))
        v = np.abs(top[:, None] - top[None, :])
        w = np.abs(gain[:, None] - gain[None, :]) * ((1 - smooth) * u + smooth * v)
        if clean:
            w = w * mask[b][:, None] * mask[b][None, :]
        weights.append(w)
    return np.stack(weights)


def lambda_frozen(xr, xp, mask, labels, clean=False):
    return lambda_weights(xr, labels, mask, clean), lambda_weights(xp, labels, mask, clean)


def ref_fs_lambdaloss(xr, xp, mask, labels, frozen, clean=False):
    """compute_fsltr_lambda_all_by_rank: per stage, sum over all ordered pairs (i, j) of
    w_ij BCE(z_i - z_j, [l_i > l_j]), mean over the batch; retrieval + ranking."""
    total = 0.0
    for x, weight in zip((xr, xp), frozen, strict=True):
        pair = bce(x[:, :, None] - x[:, None, :], labels[:, :, None] > labels[:, None, :])
        total += (pair * weight).sum() / x.shape[0]
    return total


def np_neuralsort(s, tau):
    """sorting.py neuralsort over all N slots: P[k, i] = softmax_i(((N + 1 - 2k) s_i -
    sum_j |s_i - s_j|) / tau), k = 1..N."""
    k = np.arange(1, len(s) + 1)[:, None]
    logits = ((len(s) + 1 - 2 * k) * s[None, :] - np.abs(s[:, None] - s[None, :]).sum(1)) / tau
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def arf_frozen(xr, xp, mask, labels, tau=200.0):
    """ARF-v2's detached column sums of each stage's masked permutation matrix."""
    out = []
    for x in (xr, xp):
        count = mask.sum(1)
        first = (np.arange(N)[None, :] < count[:, None]).astype(float)
        both = first[:, :, None] * first[:, None, :]
        out.append(np.stack([np_neuralsort(x[b], tau) * both[b] for b in range(len(x))]).sum(1))
    return out


def ref_arf(xr, xp, mask, labels, frozen=None, v2=False, weights=(1.0, 1.0), tau=200.0):
    """two_stage/arf.py compute_arf_metrics with tau 200, label sort at 1e-4, label_mask =
    sequence_mask(count) (the first count positions), top_k 10, support_m 30 (retrieval) / 20
    (prerank = ranking), global_size 40; LRelaxLoss (v2: LRelaxUltraLoss) + GlobalLoss through
    ArfLossModel: 0.5 / w^2 L_global + L_relax + log w, one w per stage."""
    total = 0.0
    count = mask.sum(1)
    label_mask = (np.arange(N)[None, :] < count[:, None]).astype(float)
    for s, (x, support, w) in enumerate(zip((xr, xp), (30, 20), weights, strict=True)):
        relax, glob = [], []
        for b in range(x.shape[0]):
            both = label_mask[b][:, None] * label_mask[b][None, :]
            perm = np_neuralsort(x[b], tau) * both
            label_perm = np_neuralsort(labels[b], 1e-4) * both
            truth = label_perm[:10].sum(0)
            if v2:
                column = frozen[s][b] + EPS
                keep, drop = perm[:support].sum(0) / column, perm[support:].sum(0) / column
                up = np.mean(-np.log(keep + EPS) * truth * label_mask[b])
                down = np.mean(-np.log(drop + EPS) * label_perm[10:].sum(0) * label_mask[b])
                value = up + down
            else:
                kept = perm[:support].mean(0)
                value = np.mean(-np.log(kept + EPS) * truth * label_mask[b])
            relax.append(value * (count[b] > support))
            glob.append(np.mean(-np.log(perm + EPS) * label_perm) * (count[b] >= N))
        total += 0.5 / w**2 * np.mean(glob) + np.mean(relax) + np.log(w)
    return total


# --- the comparison -------------------------------------------------------------------------


def finite_difference(ref, case, frozen, h=1e-6):
    """d ref / d logit for every real slot, and d ref / d padding logit (all padding slots of
    the request together), per stage: {(stage, b, position or "pad"): value}."""
    grads = {}
    for stage in (0, 1):
        for b in range(case.xr.shape[0]):
            targets = [(p, [p]) for p in np.flatnonzero(case.mask[b])]
            pads = np.flatnonzero(case.mask[b] == 0)
            if len(pads):
                targets.append(("pad", pads))
            for key, positions in targets:
                values = []
                for sign in (1, -1):
                    x = [case.xr.copy(), case.xp.copy()]
                    x[stage][b, positions] += sign * h
                    values.append(ref(x[0], x[1], case.mask, case.labels, frozen))
                grads[(stage, b, key)] = (values[0] - values[1]) / (2 * h)
    return grads


def our_value_and_gradients(config: LossConfig, case: Case):
    layer = losses.get(config)
    stages = [tf.Variable(case.ours_xr, dtype=tf.float32), tf.Variable(case.ours_xp, tf.float32)]
    with tf.GradientTape() as tape:
        terms = layer(stages, case.ours_labels, case.ours_mask)
    grads = [g.numpy() for g in tape.gradient(terms["loss"], stages)]
    return terms, grads


def assert_matches(config, ref, case, frozen=None):
    terms, grads = our_value_and_gradients(config, case)
    expected = ref(case.xr, case.xp, case.mask, case.labels, frozen)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-5, atol=1e-5)
    reference = finite_difference(ref, case, frozen)
    for (stage, b, key), value in reference.items():
        if key == "pad":
            mine = grads[stage][b][case.ours_mask[b] == 0].sum()
        else:
            mine = grads[stage][b, case.where[b, key]]
        np.testing.assert_allclose(
            mine, value, rtol=1e-5, atol=1e-5, err_msg=f"stage {stage}, request {b}, slot {key}"
        )
    return terms


LIST_SIZES = [N, N + 3]  # 43: three spare padding slots no benchmark block uses


@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_bce_is_the_benchmarks(list_size):
    case = make_case(0, list_size=list_size)
    terms = assert_matches(LossConfig(method="bce"), ref_bce, case)
    assert set(terms) == {"loss", "l_bce_retrieval", "l_bce_ranking"}


@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_icc_is_the_benchmarks(list_size):
    assert_matches(LossConfig(method="icc"), ref_icc, make_case(1, list_size=list_size))


def test_icc_clean_variant():
    case = make_case(2)
    ref = lambda *a: ref_icc(*a, clean=True)  # noqa: E731
    assert_matches(LossConfig(method="icc", baseline_variant="clean"), ref, case)


@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_rankflow_is_the_benchmarks(list_size):
    case = make_case(3, list_size=list_size)
    frozen = rankflow_frozen(case.xr, case.xp, case.mask, case.labels)
    assert_matches(LossConfig(method="rankflow"), ref_rankflow, case, frozen)


def test_rankflow_clean_variant():
    case = make_case(4)
    frozen = rankflow_frozen(case.xr, case.xp, case.mask, case.labels, clean=True)
    ref = lambda *a: ref_rankflow(*a, clean=True)  # noqa: E731
    assert_matches(LossConfig(method="rankflow", baseline_variant="clean"), ref, case, frozen)


@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_fs_ranknet_is_the_benchmarks(list_size):
    assert_matches(
        LossConfig(method="fs_ranknet"), ref_fs_ranknet, make_case(5, list_size=list_size)
    )


def test_fs_ranknet_clean_variant():
    ref = lambda *a: ref_fs_ranknet(*a, clean=True)  # noqa: E731
    assert_matches(LossConfig(method="fs_ranknet", baseline_variant="clean"), ref, make_case(6))


@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_fs_lambdaloss_is_the_benchmarks(list_size):
    case = make_case(7, list_size=list_size)
    frozen = lambda_frozen(case.xr, case.xp, case.mask, case.labels)
    assert_matches(LossConfig(method="fs_lambdaloss"), ref_fs_lambdaloss, case, frozen)


def test_fs_lambdaloss_clean_variant():
    case = make_case(8)
    frozen = lambda_frozen(case.xr, case.xp, case.mask, case.labels, clean=True)
    ref = lambda *a: ref_fs_lambdaloss(*a, clean=True)  # noqa: E731
    assert_matches(LossConfig(method="fs_lambdaloss", baseline_variant="clean"), ref, case, frozen)


# Full lists so that ARF's L_global (only for requests with N real items) is in play too.
ARF_COUNTS = ((10, 10, 10, 10), (7, 10, 9, 10), (10, 10, 10, 10))


@pytest.mark.parametrize("method", ["arf", "arf_v2"])
@pytest.mark.parametrize("list_size", LIST_SIZES)
def test_arf_is_the_benchmarks(method, list_size):
    case = make_case(9, counts=ARF_COUNTS, list_size=list_size)
    frozen = arf_frozen(case.xr, case.xp, case.mask, case.labels)
    ref = lambda *a: ref_arf(*a, v2=method == "arf_v2")  # noqa: E731
    terms = assert_matches(LossConfig(method=method), ref, case, frozen)
    assert terms["l_global_retrieval"].numpy() > 0 and terms["l_global_ranking"].numpy() > 0


@pytest.mark.parametrize("method", ["arf", "arf_v2"])
def test_arf_learnable_weights_are_the_benchmarks(method):
    """ArfLossModel: 0.5 / w^2 L_global + L_relax + log w per stage; value and d/dw."""
    case = make_case(10, counts=ARF_COUNTS)
    frozen = arf_frozen(case.xr, case.xp, case.mask, case.labels)
    layer = losses.get(LossConfig(method=method))
    w = (1.7, 0.6)
    for weight, value in zip(layer.global_weights, w, strict=True):
        weight.assign(value)
    with tf.GradientTape() as tape:
        terms = layer([case.ours_xr, case.ours_xp], case.ours_labels, case.ours_mask)
    grads = [g.numpy() for g in tape.gradient(terms["loss"], layer.global_weights)]
    args = (case.xr, case.xp, case.mask, case.labels, frozen)
    expected = ref_arf(*args, v2=method == "arf_v2", weights=w)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-5, atol=1e-5)
    for s in range(2):
        h = 1e-6
        up, down = list(w), list(w)
        up[s] += h
        down[s] -= h
        v2 = method == "arf_v2"
        numeric = (ref_arf(*args, v2=v2, weights=up) - ref_arf(*args, v2=v2, weights=down)) / 2 / h
        np.testing.assert_allclose(grads[s], numeric, rtol=1e-5, atol=1e-5)
    assert {v.name.split("/")[-1].split(":")[0] for v in layer.trainable_weights} == {
        "arf_w_retrieval",
        "arf_w_ranking",
    }


# --- the clean variants: what they fix -----------------------------------------------------


PADDING_FREE_CLEAN = ["rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2"]


@pytest.mark.parametrize("method", [*PADDING_FREE_CLEAN, "icc"])
def test_clean_variant_ignores_the_padding_logit(method):
    case = make_case(11)
    config = LossConfig(method=method, baseline_variant="clean")
    terms, grads = our_value_and_gradients(config, case)
    shifted = dataclasses.replace(
        case,
        ours_xr=np.where(case.ours_mask > 0, case.ours_xr, 7.5),
        ours_xp=np.where(case.ours_mask > 0, case.ours_xp, -3.5),
    )
    again, _ = our_value_and_gradients(config, shifted)
    np.testing.assert_allclose(again["loss"].numpy(), terms["loss"].numpy(), rtol=1e-6)
    for grad in grads:
        assert np.all(grad[case.ours_mask == 0] == 0)
    benchmark, _ = our_value_and_gradients(LossConfig(method=method), case)
    assert abs(benchmark["loss"].numpy() - terms["loss"].numpy()) > 1e-4


@pytest.mark.parametrize("method", PADDING_FREE_CLEAN)
def test_clean_variant_is_the_benchmark_on_full_lists(method):
    """Those accidents all concern padding: on lists without padding both variants agree."""
    case = make_case(12, counts=((10, 10, 10, 10),) * 2)
    clean, _ = our_value_and_gradients(LossConfig(method=method, baseline_variant="clean"), case)
    benchmark, _ = our_value_and_gradients(LossConfig(method=method), case)
    np.testing.assert_allclose(clean["loss"].numpy(), benchmark["loss"].numpy(), rtol=1e-5)


# --- the layout ---------------------------------------------------------------------------


def test_layout_is_rebuilt_from_labels_whatever_the_positions():
    case = make_case(13, list_size=N + 3)
    lists = layout.benchmark_lists(case.ours_labels, case.ours_mask, group_size=G)
    np.testing.assert_array_equal(lists.mask.numpy(), case.mask)
    np.testing.assert_array_equal(lists.labels.numpy(), case.labels)
    index = lists.index.numpy()
    real = case.mask > 0
    np.testing.assert_array_equal(index[real], case.where[real])
    assert np.all(case.ours_mask[np.arange(3)[:, None], index][~real] == 0)  # padding slots
    # Shuffled: the same items in each block (their order inside a block follows the list's).
    shuffled = np.random.default_rng(0).permutation(N + 3)
    again = layout.benchmark_lists(case.ours_labels[:, shuffled], case.ours_mask[:, shuffled])
    blocks = lambda x: np.sort(x.reshape(3, 4, G), axis=-1)  # noqa: E731
    np.testing.assert_array_equal(blocks(again.labels.numpy()), blocks(case.labels))
    np.testing.assert_array_equal(blocks(again.mask.numpy()), blocks(case.mask))
    moved = shuffled[again.index.numpy()]  # back to the unshuffled slots
    for b in range(3):
        assert set(moved[b][real[b]]) == set(index[b][real[b]])


def test_more_candidates_than_the_layout_holds_fail_loudly():
    labels = np.zeros((1, 12), np.float32)  # 12 prerank_neg items, no padding, G = 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer padding slots"):
        layout.benchmark_lists(labels, np.ones((1, 12)), group_size=3)
    with pytest.raises(ValueError, match="do not fit"):
        layout.benchmark_lists(labels, np.ones((1, 12)), group_size=4)
    # Overflow in one group with enough padding elsewhere: the first G are kept (the
    # benchmark's dataset keeps the first 10 of each group).
    labels = np.array([[3.9, 3.8, 3.7, 3.6, 2, 1, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]])  # 6 padding slots: enough
    lists = layout.benchmark_lists(labels, mask, group_size=3)
    np.testing.assert_array_equal(lists.index.numpy()[0, :3], [0, 1, 2])
    assert lists.count.numpy()[0] == 6


def test_baselines_are_two_stage_and_reject_bad_settings():
    with pytest.raises(ValueError, match="'icc' has no 4-stage form"):
        losses.get(LossConfig(method="icc"), num_stages=4)
    with pytest.raises(ValueError, match="IccLoss \\('icc'\\).*got num_stages=4"):
        baselines.IccLoss(num_stages=4, stage_keep=(40, 30, 20, 10))
    with pytest.raises(ValueError, match="baseline_variant"):
        LossConfig(baseline_variant="tidy")
    with pytest.raises(ValueError, match="tau"):
        losses.get(LossConfig(method="arf", arf_tau=0.0))


def test_defaults_are_the_authors_settings():
    """run_train2.py / two_stage/*.sh: cut-offs 30 and 20, ARF tau 200, LambdaLoss topn 30
    and smooth fraction 0.8, RankFlow alpha 0, ICC slope 1e-3."""
    icc = losses.get(LossConfig(method="icc"))
    assert icc.stage_keep == (30, 20) and icc.sigma == 1e-3 and icc.variant == "benchmark"
    assert losses.get(LossConfig(method="arf")).tau == 200.0
    assert losses.get(LossConfig(method="rankflow")).alpha == 0.0
    fs = losses.get(LossConfig(method="fs_lambdaloss"))
    assert (fs.topn, fs.smooth_fraction) == (30, 0.8)


@pytest.mark.parametrize("method", ["icc", "rankflow", "fs_lambdaloss", "arf_v2"])
def test_json_round_trip_keeps_every_setting(method):
    config = LossConfig(
        method=method,
        baseline_variant="clean",
        group_size=10,
        arf_tau=50.0,
        lambda_topn=12,
        lambda_smooth_fraction=0.5,
        rankflow_alpha=0.3,
    )
    layer = losses.get(config)
    restored = type(layer).from_config(json.loads(json.dumps(layer.get_config())))
    assert restored.get_config() == layer.get_config()
    case = make_case(14)
    np.testing.assert_allclose(
        restored([case.ours_xr, case.ours_xp], case.ours_labels, case.ours_mask)["loss"],
        layer([case.ours_xr, case.ours_xp], case.ours_labels, case.ours_mask)["loss"],
        rtol=1e-6,
    )
    assert isinstance(layer, baselines.BaselineLoss)
