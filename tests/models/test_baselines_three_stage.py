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
    ours_labels, ours_mask = np.zeros((batch, N)), np.zeros((batch, N))
    where = np.full((batch, N), -1)
    for b, counts in enumerate(COUNTS):
        grid = [rng.permutation(np.arange(-N, N + 1))[: N + 1] * 0.07 for _ in range(STAGES)]
        tags, graded = [], []
        for group, n_real in enumerate(counts):
            block = slice(group * G, (group + 1) * G)
            mask[b, block][:n_real] = 1
            rerank_index = rng.permutation(G)[:n_real]
            for s in range(STAGES):
                x[s, b, block] = np.where(mask[b, block] > 0, grid[s][block], grid[s][-1])
            tags += [group] * n_real
            graded += list(4 + (G - rerank_index) / G) if group == 0 else [4.0 - group] * n_real
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
            ours_labels[b, slot] = graded[k]
    return Case(x, mask, ours_x, ours_labels, ours_mask, where)


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


REFERENCES = {"bce": ref_bce, "fs_ranknet": ref_fs_ranknet}


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
    reference = REFERENCES[method]
    total, per_stage = reference(case.x, case.mask)
    terms, grad = ours(method, case)
    np.testing.assert_allclose(terms["loss"].numpy(), total, rtol=1e-5)
    for name, value in zip(("retrieval", "stage1", "ranking"), per_stage, strict=True):
        np.testing.assert_allclose(terms[f"l_{method}_{name}"].numpy(), value, rtol=1e-5)
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


def test_fs_ranknet_clean_three_stages_ignores_padding():
    case = make_case(0)
    terms, _ = ours("fs_ranknet", case, baseline_variant="clean")
    shifted = dataclasses.replace(case, ours_x=np.where(case.ours_mask > 0, case.ours_x, 50.0))
    again, _ = ours("fs_ranknet", shifted, baseline_variant="clean")
    np.testing.assert_allclose(terms["loss"].numpy(), again["loss"].numpy(), rtol=1e-6)
    bench, _ = ours("fs_ranknet", shifted)
    assert abs(bench["loss"].numpy() - terms["loss"].numpy()) > 1e-3  # the benchmark's does not


def test_every_loss_class_declares_the_stage_counts_the_config_names():
    for method, cls in losses.LOSSES.items():
        counts = getattr(cls, "stage_counts", None)
        assert counts == LOSS_STAGE_COUNTS[method], method


@pytest.mark.parametrize("method", [m for m, c in LOSS_STAGE_COUNTS.items() if c and 3 not in c])
def test_a_baseline_without_a_three_stage_form_is_refused_by_name(method):
    with pytest.raises(ValueError, match=f"'{method}' has no 3-stage form"):
        losses.get(LossConfig(method=method), stage_keep=(40, 30, 20))
