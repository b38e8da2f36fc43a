"""How much of the ground truth each kind of scorer can reach in a simulated world.

The LCRON paper's premise is a cascade whose first stage is a cheap model that cannot see what
the ground truth depends on, so that the stages must collaborate. This module measures that
property of a :class:`SimulatorConfig`, from the world alone (no training), on the logged lists
of day-1 requests (ground truth = the 10 ``rank_pos`` items, as in the experiments; day 0 builds
the users' behaviour sequences):

- ``pair``: the true affinity itself. A ranking model sees the (user, video) pair; this is
  the best it can do (below 1 because the logged ground truth is the production ranking's
  noisy choice).
- ``two_tower``: the best ``dim``-dimensional dot product ``<f(user), g(video)>`` of the
  affinity: the truncated SVD of the user x video affinity matrix at the day's start, with each
  user's behaviour sequence then (each row centred, which no ranking within a request sees).
  That is what a perfectly fitted two-tower model with ``dim``-dimensional outputs reaches
  in squared error over all pairs; a real one, trained on lists from finitely many logs, does
  not do better in practice.
  Generous: each user's row holds the user's whole sequence at the day's start, which a tower
  that pools the sequence into one vector cannot resolve creator by creator.
- ``two_tower_without_sequence``: the same fit of the affinity without the loyalty term (the
  users' long-term profiles only): a first stage that cannot see the sequence at all.
- ``item_only``: each video's mean affinity over users, the non-personalised floor.

Figures: the first stage's Recall@10@30 (keep 30 of the 40), the second stage's Recall@10@20
(keep 20 of the 40), and the cascade's Recall@10@30@20 with the two-tower oracle first and the
pair oracle second. ``python -m simulator.difficulty [--config my_world.json]`` prints them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from simulator.cascade import run_cascade
from simulator.config import SimulatorConfig
from simulator.sequences import BehaviourHistory
from simulator.simulate import BATCH_REQUESTS, _initial_histories
from simulator.world import World

GT, K1, K2 = 10, 30, 20


def _recall(scores: np.ndarray, truth: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Per request: share of the ground truth among the top-k of ``scores`` within ``keep``."""
    ranked = np.where(keep, scores, -np.inf)
    top = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    chosen = np.zeros_like(truth)
    np.put_along_axis(chosen, top, True, axis=1)
    chosen &= keep
    return (chosen & truth).sum(1) / truth.sum(1)


def _top_mask(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    mask = np.zeros(scores.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def _best_dot_product(matrix: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """Rank-``dim`` truncated SVD of the row-centred matrix, and its share of the variance."""
    centred = matrix - matrix.mean(axis=1, keepdims=True)
    left, singular, right = np.linalg.svd(centred, full_matrices=False)
    low_rank = (left[:, :dim] * singular[:dim]) @ right[:dim]
    return low_rank, float((singular[:dim] ** 2).sum() / (singular**2).sum())


def _warm_world(
    config: SimulatorConfig, requests: int, rng: np.random.Generator
) -> tuple[World, BehaviourHistory, int]:
    """The world at the start of day 1, after ``requests`` day-0 requests built histories."""
    world = World.create(config, rng)
    history = BehaviourHistory(config.seq_len)
    history.add_users(_initial_histories(world, rng))
    salt = int(rng.integers(0, 2**62))
    users = rng.choice(world.num_users, requests, p=world.activity / world.activity.sum())
    now = np.sort(rng.integers(0, 86_400_000, requests)) + config.start_timestamp_ms
    for start in range(0, requests, BATCH_REQUESTS):
        part = slice(start, start + BATCH_REQUESTS)
        counts = world.author_counts(history.recent(users[part]))
        batch = run_cascade(world, users[part], now[part], rng, salt, counts)
        history.snapshot_and_update(users[part], batch.feed_videos, batch.feed_effective_view)
    new_users, _ = world.start_day(1, rng)
    history.add_users([[] for _ in range(new_users)])
    return world, history, salt


def premise_figures(
    config: SimulatorConfig,
    requests: int = 1000,
    seed: int = 0,
    dim: int = 16,
    warmup_requests: int = 2000,
) -> dict[str, Any]:
    """Recall of each oracle scorer on the logged lists of ``requests`` requests of day 1.

    Day 0 (``warmup_requests`` requests) only builds the users' behaviour sequences.

    Returns:
      {"two_tower": {"recall_at_10_at_30", "recall_at_10_at_20"}, "pair": {...},
       "item_only": {...}, "cascade_two_tower_then_pair": recall, "share_explained": the
       share of the centred affinity's variance the two-tower fit explains, "requests", "dim"}.
    """
    rng = np.random.default_rng([seed, 0])
    world, history, salt = _warm_world(config, warmup_requests, rng)
    users = rng.choice(world.num_users, requests, p=world.activity / world.activity.sum())
    start = config.start_timestamp_ms + 86_400_000
    now = np.sort(rng.integers(start, start + 86_400_000, requests))
    counts = world.author_counts(history.recent(users))
    batch = run_cascade(world, users, now, rng, salt, counts)
    width = len(batch.video) // requests
    videos = batch.video.reshape(requests, width)
    truth = batch.group.reshape(requests, width) == 3
    full = np.ones_like(truth)

    # The user x video affinity at the day's start (with each user's sequence then), over the
    # users of these requests and every video.
    unique_users, first, user_row = np.unique(users, return_index=True, return_inverse=True)
    items = np.broadcast_to(np.arange(world.num_items), (len(unique_users), world.num_items))
    matrix = world.affinity(unique_users, items, np.full(len(unique_users), start), counts[first])
    low_rank, explained = _best_dot_product(matrix, dim)
    # The same without the users' sequences: what a dot product of long-term profiles sees.
    static = world.affinity(unique_users, items, np.full(len(unique_users), start))
    static_low_rank, _ = _best_dot_product(static, dim)

    scorers = {
        "pair": world.affinity(users, videos, now, counts),
        "two_tower": low_rank[user_row[:, None], videos],
        "two_tower_without_sequence": static_low_rank[user_row[:, None], videos],
        "item_only": matrix.mean(axis=0)[videos],
    }
    figures: dict[str, Any] = {"requests": requests, "dim": dim, "share_explained": explained}
    for name, scores in scorers.items():
        figures[name] = {
            "recall_at_10_at_30": float(_recall(scores, truth, full, K1).mean()),
            "recall_at_10_at_20": float(_recall(scores, truth, full, K2).mean()),
        }
    passed = _top_mask(scorers["two_tower"], K1)
    cascade = _recall(scorers["pair"], truth, passed, K2)
    figures["cascade_two_tower_then_pair"] = float(cascade.mean())
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON object of SimulatorConfig overrides")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=16, help="two-tower output size (16)")
    args = parser.parse_args(argv)
    config = SimulatorConfig.from_json_file(args.config) if args.config else SimulatorConfig()
    figures = premise_figures(config, args.requests, args.seed, args.dim)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
