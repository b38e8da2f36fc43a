"""NumPy twins of ``models.metrics.functions`` (same values, no TensorFlow import).

For the evaluator and the experiments, which score whole days of requests outside a graph.
Inputs are [batch, list_size] arrays; scores and labels are compared in float32 like the
TensorFlow versions, so ties (and hence selections) are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _valid(mask: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    like = np.asarray(like)
    return np.ones(like.shape, bool) if mask is None else np.asarray(mask).astype(bool)


def _descending_order(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row, item indices by descending value: valid first, ties by lower index."""
    values = np.asarray(values, np.float32)
    finite = np.maximum(values, np.finfo(np.float32).min)
    keyed = np.where(valid, -finite, np.inf)  # padding last; a stable sort keeps index order
    return np.argsort(keyed, axis=-1, kind="stable")


def top_k_indicator(scores: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    """0/1 float32 [batch, list_size]: the top-k valid items (ties: lower index first)."""
    scores = np.asarray(scores)
    valid = _valid(mask, scores)
    order = _descending_order(scores, valid)[:, :k]
    chosen = np.zeros(scores.shape, np.float32)
    np.put_along_axis(chosen, order, 1.0, axis=-1)
    return chosen * valid


def ground_truth_indicator(labels: np.ndarray, mask: np.ndarray | None, gt_num: int = 10):
    """0/1 float32: the gt_num valid items with the largest labels."""
    return top_k_indicator(labels, mask, gt_num)


def cascade_selection(
    stage_scores: Sequence[np.ndarray], mask: np.ndarray | None, ks: Sequence[int]
) -> np.ndarray:
    """0/1 float32: what survives the cascade (stage s keeps its top ks[s] of what it gets)."""
    if len(stage_scores) != len(ks) or not stage_scores:
        raise ValueError(f"got {len(stage_scores)} stage scores but cut-offs {tuple(ks)}")
    kept = _valid(mask, stage_scores[0]).astype(np.float32)
    for scores, k in zip(stage_scores, ks, strict=True):
        kept = top_k_indicator(scores, kept, k)
    return kept


def cascade_recall(
    stage_scores: Sequence[np.ndarray],
    labels: np.ndarray,
    mask: np.ndarray | None,
    ks: Sequence[int] = (30, 20),
    gt_num: int = 10,
) -> np.ndarray:
    """End-to-end Recall@gt_num@k1@k2..., [batch] float32 (0 without valid items)."""
    y = ground_truth_indicator(labels, mask, gt_num)
    kept = cascade_selection(stage_scores, mask, ks)
    return (y * kept).sum(-1) / np.maximum(y.sum(-1), 1.0)


def stage_recall(scores, labels, mask, k: int = 30, gt_num: int = 10) -> np.ndarray:
    """Recall@gt_num@k of one stage, [batch] float32."""
    return cascade_recall([scores], labels, mask, (k,), gt_num)


def ndcg(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, k: int = 10):
    """NDCG@k, gain 2^label - 1, discount 1 / log2(rank + 1), [batch] float32."""
    labels = np.asarray(labels, np.float32)
    valid = _valid(mask, labels)
    k = min(k, labels.shape[-1])
    discount = (1.0 / np.log2(np.arange(k) + 2.0)).astype(np.float32)
    gains = np.where(valid, np.power(2.0, labels) - 1.0, 0.0).astype(np.float32)

    def dcg(order_by: np.ndarray) -> np.ndarray:
        top = _descending_order(order_by, valid)[:, :k]
        top_valid = np.take_along_axis(valid, top, axis=-1)
        return (np.take_along_axis(gains, top, axis=-1) * top_valid * discount).sum(-1)

    ideal = dcg(labels)
    return np.where(ideal > 0, dcg(scores) / np.where(ideal > 0, ideal, 1.0), 0.0).astype(
        np.float32
    )


def kendall_tau(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Kendall's tau-b over the valid items, [batch] float32 (0 when undefined)."""
    valid = _valid(mask, labels)
    scores = np.where(valid, np.asarray(scores, np.float32), 0.0)
    labels = np.where(valid, np.asarray(labels, np.float32), 0.0)
    pair = (valid[:, :, None] & valid[:, None, :]) & ~np.eye(labels.shape[-1], dtype=bool)
    sign_s = np.sign(scores[:, :, None] - scores[:, None, :]) * pair
    sign_l = np.sign(labels[:, :, None] - labels[:, None, :]) * pair
    concordance = (sign_s * sign_l).sum((-2, -1))
    denom = np.sqrt(np.abs(sign_s).sum((-2, -1)) * np.abs(sign_l).sum((-2, -1)))
    return np.where(denom > 0, concordance / np.where(denom > 0, denom, 1.0), 0.0).astype(
        np.float32
    )
