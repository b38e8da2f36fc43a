"""The baselines' three-stage forms against NumPy transcriptions of the authors' three-stage
code, value and gradient (1e-5), and the refusal of those without one.

Each ``ref_*`` is written here from reading kwai/LCRON ``deep_components/loss/three_stage``
(file named in its docstring) as ``run_train3.py`` calls it: per request five blocks of G = 10
slots (rerank_pos, rerank_neg, rank_neg, coarse_neg, prerank_neg; ``dataset3.py``), real items
first in each block, padding slots after them holding the padding's logit. Our losses get the
same requests in our layout (real candidates at random positions, padding anywhere, graded
labels 4 + (10 - rerank_index) / 10, 3, 2, 1, 0). Reference gradients are central finite
differences in float64; every padding slot of a request shares one logit, so the padding's
gradient is compared as the sum over its slots.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.config import LOSS_STAGE_COUNTS, LossConfig

G, GROUPS, STAGES = 10, 5, 3
N = G * GROUPS
# Real items per block (rerank_pos .. prerank_neg); the last two requests have padding.
COUNTS = ((10, 10, 10, 10, 10), (6, 4, 10, 9, 10), (3, 10, 7, 10, 2))


def softplus(x):
    return np.logaddexp(0.0, x)


def bce(logit, target):
    return softplus(logit) - target * logit


@dataclasses.dataclass
class Case:
    x: np.ndarray  # [3, B, N] the authors' layout (retrieval, prerank, rank)
    mask: np.ndarray  # [B, N]
    labels: np.ndarray  # [B, N] dataset3.py's: 30 - rerank_index (padding: 30), 8, 7, 6, 5
    ours_x: np.ndarray  # [3, B, N] ours
    ours_labels: np.ndarray
    ours_mask: np.ndarray
    where: np.ndarray  # [B, N] our slot of each real benchmark slot, -1 for padding


def make_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    batch = len(COUNTS)
    x = np.zeros((STAGES, batch, N))
    ours_x = np.zeros((STAGES, batch, N))
    mask = np.zeros((batch, N))
    labels = np.zeros((batch, N))
    ours_labels, ours_mask = np.zeros((batch, N)), np.zeros((batch, N))
    where = np.full((batch, N), -1)
    for b, counts in enumerate(COUNTS):
        grid = [rng.permutation(np.arange(-N, N + 1))[: N + 1] * 0.07 for _ in range(STAGES)]
        tags = []
        for group, n_real in enumerate(counts):
            block = slice(group * G, (group + 1) * G)
            mask[b, block][:n_real] = 1
            rerank_index = rng.permutation(G)[:n_real]
            if group == 0:
                labels[b, block] = 30 - np.r_[rerank_index, np.zeros(G - n_real)]
            else:
                labels[b, block] = 9 - group
            for s in range(STAGES):
                x[s, b, block] = np.where(mask[b, block] > 0, grid[s][block], grid[s][-1])
            tags += [group] * n_real
        order = rng.permutation(len(tags))
        slots = np.sort(rng.choice(N, size=len(tags), replace=False))
        for s in range(STAGES):
            ours_x[s, b] = grid[s][-1]
        seen = [0] * GROUPS
        for slot, k in zip(slots, order, strict=True):
            group = tags[k]
            position = group * G + seen[group]
            seen[group] += 1
            where[b, position] = slot
            ours_x[:, b, slot] = x[:, b, position]
            ours_mask[b, slot] = 1
            # The graded label of the benchmark slot it fills (its rerank_index, its group).
            rerank = 30 - labels[b, position]
            ours_labels[b, slot] = 4 + (G - rerank) / G if group == 0 else 4.0 - group
    return Case(x, mask, labels, ours_x, ours_labels, ours_mask, where)


def ref_bce(x, mask):
    """three_stage/bce.py compute_bce_loss: rank on blocks 0-1, prerank 0-3, retrieval 0-4;
    target 1 on rerank_pos; BCE with weight = mask, mean over the slots of those blocks."""
    batch = mask.shape[0]
    target = (np.arange(N) < G).astype(float)
    terms = []
    for s, blocks in enumerate((5, 4, 2)):
        n = blocks * G
        terms.append(np.sum(mask[:, :n] * bce(x[s][:, :n], target[:n])) / (batch * n))
    return sum(terms), terms


def ref_fs_ranknet(x, mask):
    """three_stage/fs_ranknet.py compute_fs_ranknet_loss on each stage's logits: each of the
    four upper blocks against every slot below it, weight ones (no mask), sum / ((4 - a) G
    * batch G); the stages' losses summed (one optimiser step each)."""
    del mask  # the three-stage code uses none
    batch = x.shape[1]
    terms = []
    for s in range(STAGES):
        z = x[s]
        total = 0.0
        for a in range(GROUPS - 1):
            anchors = z[:, a * G : (a + 1) * G]
            below = z[:, (a + 1) * G :]
            pairs = softplus(-(anchors[:, :, None] - below[:, None, :]))
            total += pairs.sum() / ((GROUPS - 1 - a) * G * batch * G)
        terms.append(total)
    return sum(terms), terms


def lambda_weights(x, labels, topn=30, smooth=0.8):
    """fs_lambdaloss.py compute_lambda_loss's detached pair weights of one stage (gain = label,
    discount 1 / ln(1 + rank), no mask), at run_train3.py's settings (0.8, 30)."""
    discount = lambda r: 1.0 / np.log(1.0 + r)  # noqa: E731
    weights = []
    for b in range(x.shape[0]):
        rank = np.empty(N)
        rank[np.argsort(-x[b], kind="stable")] = np.arange(1, N + 1)
        idcg = (np.sort(labels[b])[::-1] * discount(np.arange(1, N + 1))).sum()
        gain = labels[b] / idcg
        diff = np.abs(rank[:, None] - rank[None, :])
        near = (rank[:, None] <= topn) | (rank[None, :] <= topn)
        with np.errstate(divide="ignore"):
            u = np.where((diff > 0) & near, np.abs(discount(diff) - discount(diff + 1)), 0.0)
        top = np.where(rank > topn, 0.0, discount(rank))
        v = np.abs(top[:, None] - top[None, :])
        weights.append(np.abs(gain[:, None] - gain[None, :]) * ((1 - smooth) * u + smooth * v))
    return np.stack(weights)


def fs_lambdaloss_reference(case: Case):
    """three_stage/fs_lambdaloss.py compute_fs_lambdaloss: per stage, sum over ordered pairs of
    w_ij BCE(z_i - z_j, [l_i > l_j]), mean over the batch; the three stages summed. The pair
    weights (detached) are those of the base point."""
    frozen = [lambda_weights(case.x[s], case.labels) for s in range(STAGES)]

    def reference(x, mask):
        del mask
        terms = []
        higher = case.labels[:, :, None] > case.labels[:, None, :]
        for s in range(STAGES):
            pair = bce(x[s][:, :, None] - x[s][:, None, :], higher)
            terms.append((pair * frozen[s]).sum() / x.shape[1])
        return sum(terms), terms

    return reference


def log_sigmoid(x):
    return -softplus(-x)


def top(values, k):
    """Indices of the k largest per row, largest first (values are distinct here)."""
    return np.argsort(-values, axis=1, kind="stable")[:, :k]


def rankflow_reference(case: Case):
    """three_stage/rankflow.py compute_rankflow_loss (topk 40, prerank top 30 / bottom 10,
    rank top 20 / bottom 10; target 1 on rerank_pos; no mask): seven terms summed. The top-k
    selections and the distillation targets (detached) are those of the base point."""
    target = np.broadcast_to((np.arange(N) < G).astype(float), case.mask.shape)
    take = lambda v, idx: np.take_along_axis(v, idx, axis=1)  # noqa: E731
    xr, xp, xk = case.x
    t1 = top(xr, 40)
    p_pos, p_neg = top(take(xp, t1), 30), top(-take(xp, t1), 10)
    t2 = take(t1, p_pos)
    k_pos, k_neg = top(take(xk, t2), 20), top(-take(xk, t2), 10)
    teacher_p, teacher_k = take(xp, t1), take(xk, t2)

    def reference(x, mask):
        del mask
        xr, xp, xk = x
        retrieval_loss = bce(xr, target).mean()
        prerank_loss = bce(take(xp, t1), take(target, t1)).mean()
        retrieval_mse = ((teacher_p - take(xr, t1)) ** 2).mean()
        r1 = take(xr, t1)
        retrieval_rank = -log_sigmoid(take(r1, p_pos).mean(1) - take(r1, p_neg).mean(1)).mean()
        rank_loss = bce(take(xk, t2), take(target, t2)).mean()
        prerank_mse = ((teacher_k - take(xp, t2)) ** 2).mean()
        p2 = take(xp, t2)
        prerank_rank = -log_sigmoid(take(p2, k_pos).mean(1) - take(p2, k_neg).mean(1)).mean()
        terms = [
            retrieval_loss,
            prerank_loss,
            rank_loss,
            retrieval_mse,
            prerank_mse,
            retrieval_rank,
            prerank_rank,
        ]
        return sum(terms), terms

    return reference


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def icc_reference(case: Case, keeps=(40, 30, 30), clean=False):
    """three_stage/icc.py compute_icc_loss: logistic gates (sigma 1e-3) at the k-th largest of
    retrieval (40), pre-ranking (30) and ranking (joint_prerank_k: 30 again); ensemble
    (1 - g0) z0 + g0 2 (1 - g1) z1 + g0 g1 4 g2 z2; BCE over pairs i < j with target
    [l_i > l_j], mean over batch x N x N. The k-th item of each gate is the base point's."""
    kth = [np.argsort(-case.x[s], axis=1, kind="stable")[:, keeps[s] - 1] for s in range(STAGES)]
    upper = np.triu(np.ones((N, N)), 1)
    higher = (case.labels[:, :, None] > case.labels[:, None, :]).astype(float)

    def reference(x, mask):
        del mask
        score, passed = 0.0, 1.0
        for s in range(STAGES):
            kappa = np.take_along_axis(x[s], kth[s][:, None], axis=1)
            gate = sigmoid((x[s] - kappa) / 1e-3)
            if s < STAGES - 1:
                score = score + passed * 2**s * (1 - gate) * x[s]
                passed = passed * gate
            else:
                score = score + passed * 2**s * gate * x[s]
        pairs = bce(score[:, :, None] - score[:, None, :], higher) * upper
        value = pairs.sum() / (x.shape[1] * N * N)
        return value, [value]

    return reference


def np_neuralsort(s, tau):
    """sorting.py neuralsort over all N slots: P[k, i] = softmax_i(((N + 1 - 2k) s_i -
    sum_j |s_i - s_j|) / tau), k = 1..N."""
    k = np.arange(1, len(s) + 1)[:, None]
    logits = ((len(s) + 1 - 2 * k) * s[None, :] - np.abs(s[:, None] - s[None, :]).sum(1)) / tau
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def arf_reference(case: Case, v2: bool = False):
    """three_stage/arf.py compute_arf_loss: tau 200, label sort at 1e-4 (not thresholded),
    label_mask = sequence_mask(count, 50) (the first count positions), top_k 10, support_m 40
    (retrieval), 30 (prerank), 20 (rank), global_size 50; ARFV1Loss (v2: ARFV2Loss, its
    LRelaxUltraLoss) + GlobalLoss through ArfLossModel: 0.5 / w^2 L_global + L_relax + log w
    with w = 1; the three stages summed. ARF-v2's column sums (detached) are the base point's."""
    count = case.mask.sum(1)
    label_mask = (np.arange(N)[None, :] < count[:, None]).astype(float)
    both = label_mask[:, :, None] * label_mask[:, None, :]
    label_perm = np.stack([np_neuralsort(case.labels[b], 1e-4) for b in range(len(count))]) * both
    columns = [
        np.stack([np_neuralsort(case.x[s][b], 200.0) for b in range(len(count))]) * both
        for s in range(STAGES)
    ]
    columns = [c.sum(1) for c in columns]

    def reference(x, mask):
        del mask
        terms = []
        for s, support in enumerate((40, 30, 20)):
            relax, glob = [], []
            for b in range(len(count)):
                perm = np_neuralsort(x[s][b], 200.0) * both[b]
                truth = label_perm[b][:10].sum(0)
                if v2:
                    column = columns[s][b] + 1e-6
                    keep = perm[:support].sum(0) / column
                    drop = perm[support:].sum(0) / column
                    rest = label_perm[b][10:].sum(0)
                    value = np.mean(-np.log(keep + 1e-6) * truth * label_mask[b]) + np.mean(
                        -np.log(drop + 1e-6) * rest * label_mask[b]
                    )
                else:
                    kept = perm[:support].mean(0)
                    value = np.mean(-np.log(kept + 1e-6) * truth * label_mask[b])
                relax.append(value * (count[b] > support))
                glob.append(np.mean(-np.log(perm + 1e-6) * label_perm[b]) * (count[b] >= N))
            terms.append(0.5 * np.mean(glob) + np.mean(relax) + np.log(1.0))
        return sum(terms), terms

    return reference


RANKFLOW_TERMS = (
    "l_bce_retrieval",
    "l_bce_stage1",
    "l_bce_ranking",
    "l_distill_retrieval",
    "l_distill_stage1",
    "l_rank_retrieval",
    "l_rank_stage1",
)

REFERENCES = {
    "arf": arf_reference,
    "arf_v2": lambda case: arf_reference(case, v2=True),
    "icc": icc_reference,
    "rankflow": rankflow_reference,
    "bce": lambda case: ref_bce,
    "fs_ranknet": lambda case: ref_fs_ranknet,
    "fs_lambdaloss": fs_lambdaloss_reference,
}


def ours(method: str, case: Case, **config):
    layer = losses.get(LossConfig(method=method, **config), stage_keep=(40, 30, 20))
    variables = [tf.Variable(case.ours_x[s].astype(np.float32)) for s in range(STAGES)]
    with tf.GradientTape() as tape:
        terms = layer(variables, case.ours_labels.astype(np.float32), case.ours_mask)
    return terms, np.stack([g.numpy() for g in tape.gradient(terms["loss"], variables)])


def finite_differences(reference, case: Case) -> np.ndarray:
    h = 1e-6
    grad = np.zeros_like(case.x)
    for index in np.ndindex(*case.x.shape):
        plus, minus = case.x.copy(), case.x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (reference(plus, case.mask)[0] - reference(minus, case.mask)[0]) / (2 * h)
    return grad


@pytest.mark.parametrize("method", sorted(REFERENCES))
@pytest.mark.parametrize("seed", [0, 1])
def test_three_stage_form_matches_the_authors_value_and_gradient(method, seed):
    case = make_case(seed)
    reference = REFERENCES[method](case)
    total, per_stage = reference(case.x, case.mask)
    terms, grad = ours(method, case)
    np.testing.assert_allclose(terms["loss"].numpy(), total, rtol=1e-5)
    names = {"rankflow": RANKFLOW_TERMS, "icc": ["l_icc"]}.get(
        method, [f"l_{method}_{s}" for s in ("retrieval", "stage1", "ranking")]
    )
    if method.startswith("arf"):  # per stage: 0.5 / w^2 L_global + L_relax + log w, w = 1
        mine = [
            0.5 * terms[f"l_global_{s}"].numpy() + terms[f"l_relax_{s}"].numpy()
            for s in ("retrieval", "stage1", "ranking")
        ]
        np.testing.assert_allclose(mine, per_stage, rtol=1e-5)
    else:
        for name, value in zip(names, per_stage, strict=True):
            np.testing.assert_allclose(terms[name].numpy(), value, rtol=1e-5, err_msg=name)
    expected = finite_differences(reference, case)
    for s in range(STAGES):
        for b in range(case.mask.shape[0]):
            real = case.where[b] >= 0
            np.testing.assert_allclose(
                grad[s, b, case.where[b][real]], expected[s, b][real], rtol=1e-4, atol=1e-6
            )
            padding = case.ours_mask[b] == 0
            np.testing.assert_allclose(
                grad[s, b][padding].sum(), expected[s, b][~real].sum(), rtol=1e-4, atol=1e-6
            )


@pytest.mark.parametrize("method", ["fs_ranknet", "fs_lambdaloss", "rankflow", "icc"])
def test_clean_three_stage_forms_ignore_padding(method):
    case = make_case(0)
    terms, _ = ours(method, case, baseline_variant="clean")
    shifted = dataclasses.replace(case, ours_x=np.where(case.ours_mask > 0, case.ours_x, 50.0))
    again, _ = ours(method, shifted, baseline_variant="clean")
    np.testing.assert_allclose(terms["loss"].numpy(), again["loss"].numpy(), rtol=1e-5)
    bench, _ = ours(method, shifted)
    assert abs(bench["loss"].numpy() - terms["loss"].numpy()) > 1e-3  # the benchmark's does not


def test_every_loss_class_declares_the_stage_counts_the_config_names():
    for method, cls in losses.LOSSES.items():
        counts = getattr(cls, "stage_counts", None)
        assert counts == LOSS_STAGE_COUNTS[method], method


@pytest.mark.parametrize("method", [m for m, c in LOSS_STAGE_COUNTS.items() if c])
def test_a_baseline_without_a_form_for_the_stage_count_is_refused_by_name(method):
    counts = LOSS_STAGE_COUNTS[method]
    keeps = {3: (40, 30, 20), 4: (40, 30, 20, 10)}
    for n in (3, 4):
        if n in counts:
            assert losses.get(LossConfig(method=method), stage_keep=keeps[n]).num_stages == n
        else:
            with pytest.raises(ValueError, match=f"'{method}' has no {n}-stage form"):
                losses.get(LossConfig(method=method), stage_keep=keeps[n])
