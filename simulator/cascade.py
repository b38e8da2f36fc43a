"""The production cascade a batch of requests goes through, and what gets logged of it.

Per request (all sizes from :class:`SimulatorConfig`, defaults in brackets):

1. Candidate pool [200]: videos uploaded before the request, drawn without replacement with
   weights exp(popularity + pool_personalization * category preference) (Gumbel top-k).
2. Pre-ranking keeps its top ``prerank_keep`` [100]; the rest are ``prerank_neg``.
3. Coarse ranking keeps its top ``coarse_keep`` [40] of those; the rest are ``coarse_neg``.
4. Ranking orders all ``coarse_keep``: ``rank_index`` is the position (0 = best); the top
   ``rerank_candidates`` [10] go on to re-ranking and are ``rank_pos``, the others ``rank_neg``.
5. Re-ranking reorders the ``rank_pos`` items (``rerank_index`` 0..rerank_candidates-1) and
   exposes its top k (k uniform in [min_exposed, max_exposed], ``realshow = 1``). With 10
   candidates (the default, RecFlow's two-stage setting) its output is what it exposes:
   ``rerank_pos = realshow``, the other rank_pos items are ``rerank_neg``. With more (20: the
   paper's three-stage setting) its output is its top ``GROUP_SIZE`` (``rerank_pos``, of which
   the exposed are the first k), the rest ``rerank_neg``.
6. Feedback on exposed videos only, drawn from the true affinity.

Each stage scores ``affinity + noise`` with the stage's noise std (decreasing stage to stage);
half of the noise variance is a fixed bias per (stage, user, video), so a stage's mistakes are
systematic, the other half is fresh per request.

Logged rows per request: all ``rank_pos`` items (ordered by rank_index) and up to
``group_size`` uniformly sampled items of each of rank_neg, coarse_neg and prerank_neg.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from models.features import GROUP_SIZE
from simulator.world import World


@dataclasses.dataclass
class CascadeBatch:
    """Logged rows of a batch of requests; every array has one entry per row unless noted."""

    row_request: np.ndarray  # index of the row's request in the batch
    video: np.ndarray
    group: np.ndarray  # 3 rank_pos, 2 rank_neg, 1 coarse_neg, 0 prerank_neg (STAGE_CODES)
    rank_index: np.ndarray  # 0..coarse_keep-1 for ranked rows, -1 otherwise
    rerank_index: np.ndarray  # 0..rerank_candidates-1 for rank_pos rows, -1 otherwise
    realshow: np.ndarray
    rerank_pos: np.ndarray
    rerank_neg: np.ndarray
    playing_time: np.ndarray  # float64 seconds
    effective_view: np.ndarray
    long_view: np.ndarray
    like: np.ndarray
    follow: np.ndarray
    forward: np.ndarray
    comment: np.ndarray
    # Per request, for the behaviour sequences: [batch, GROUP_SIZE], re-ranking's top in its
    # order (every exposed item is among them).
    feed_videos: np.ndarray
    feed_effective_view: np.ndarray  # bool, exposed and effectively viewed


def _hash_normal(stage: int, salt: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Deterministic N(0, 1) per (stage, user, video): the stage's fixed scoring bias."""
    with np.errstate(over="ignore"):
        x = (users.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)) ^ (
            items.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        x ^= np.uint64((salt * 8 + stage) & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        # splitmix64 finaliser
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    u1 = ((x >> np.uint64(40)).astype(np.float64) + 0.5) / float(1 << 24)
    u2 = ((x & np.uint64(0xFFFFFF)).astype(np.float64) + 0.5) / float(1 << 24)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _stage_scores(
    stage: int, noise: float, salt: int, users, items, affinity, rng: np.random.Generator
) -> np.ndarray:
    half = noise / np.sqrt(2.0)
    fixed = _hash_normal(stage, salt, users, items)
    return affinity + half * fixed + half * rng.normal(size=affinity.shape)


def _sample_pool(
    world: World, users: np.ndarray, now_ms: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[batch, pool_size] distinct videos uploaded at or before each request (Gumbel top-k)."""
    c = world.config
    available = np.searchsorted(world.upload_timestamp, now_ms, side="right")  # [B]
    n = int(available.max())
    # float32 throughout: this [batch, videos] step dominates the simulator's run time.
    preference = (c.pool_personalization * world.category_pref[users]).astype(np.float32)
    popularity = world.log_popularity[:n].astype(np.float32)
    logits = popularity[None, :] + preference[:, world.category_two[:n]]
    # Gumbel(0, 1) noise as -log(Exp(1)); top-k of logits + Gumbel = sampling without replacement.
    exponential = rng.standard_exponential(logits.shape, dtype=np.float32)
    keys = logits - np.log(np.maximum(exponential, np.float32(1e-30)))
    keys[np.arange(n)[None, :] >= available[:, None]] = -np.inf
    top = np.argpartition(-keys, c.pool_size - 1, axis=1)[:, : c.pool_size]
    return np.sort(top, axis=1)  # sorted so the result does not depend on partition internals


def _top(scores: np.ndarray, positions: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``positions`` [B, n] by ``scores`` [B, n] into (kept in score order, dropped)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(positions, order, axis=1)
    return ranked[:, :keep], ranked[:, keep:]


def _sample(positions: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` positions per row, uniformly without replacement ([B, min(k, n)])."""
    if positions.shape[1] <= k:
        return positions
    pick = np.argsort(rng.random(positions.shape), axis=1)[:, :k]
    return np.take_along_axis(positions, pick, axis=1)


def run_cascade(
    world: World,
    users: np.ndarray,
    now_ms: np.ndarray,
    rng: np.random.Generator,
    salt: int,
    author_counts: np.ndarray | None = None,
) -> CascadeBatch:
    """Runs the cascade for a batch of requests.

    Args:
      world: the world (read only).
      users: [batch] user indices.
      now_ms: [batch] request timestamps (ms).
      rng: random stream of this batch.
      salt: seed-derived constant for the stages' fixed biases.
      author_counts: [batch, num_authors] each request's recent views per author, for the
        affinity's loyalty term (``World.author_counts``); None: no recent views.

    Returns:
      The batch's logged rows, request-major (rows of request 0 first).
    """
    c = world.config
    batch = len(users)
    pool = _sample_pool(world, users, now_ms, rng)  # [B, P] video ids
    affinity = world.affinity(users, pool, now_ms, author_counts)  # [B, P]
    noises = (c.prerank_noise, c.coarse_noise, c.rank_noise, c.rerank_noise)

    def scores(stage: int, positions: np.ndarray) -> np.ndarray:
        items = np.take_along_axis(pool, positions, axis=1)
        aff = np.take_along_axis(affinity, positions, axis=1)
        return _stage_scores(stage, noises[stage], salt, users, items, aff, rng)

    everything = np.broadcast_to(np.arange(c.pool_size), (batch, c.pool_size))
    prerank_kept, prerank_neg = _top(scores(0, everything), everything, c.prerank_keep)
    ranked, coarse_neg = _top(scores(1, prerank_kept), prerank_kept, c.coarse_keep)
    ranked, _ = _top(scores(2, ranked), ranked, c.coarse_keep)  # full ranking order
    passed = c.rerank_candidates
    rank_pos, rank_neg = ranked[:, :passed], ranked[:, passed:]
    slots = np.broadcast_to(np.arange(passed), rank_pos.shape)
    rerank_order, _ = _top(scores(3, rank_pos), slots, passed)  # slots, re-ranking order
    # rerank_index of the j-th rank_pos item (rank_pos is in ranking order).
    rerank_index = np.argsort(rerank_order, axis=1)
    exposed_count = rng.integers(c.min_exposed, c.max_exposed + 1, batch)
    shown = rerank_index < exposed_count[:, None]  # [B, passed]
    # Re-ranking's output: what it exposes, or (passed more than GROUP_SIZE) its top GROUP_SIZE.
    reranked = shown if passed == GROUP_SIZE else rerank_index < GROUP_SIZE

    # Feedback on the rank_pos items, zeroed where not exposed.
    aff_pos = np.take_along_axis(affinity, rank_pos, axis=1)
    videos_pos = np.take_along_axis(pool, rank_pos, axis=1)
    relative = aff_pos - c.feedback_reference
    z = c.view_bias + c.view_scale * relative + rng.logistic(size=aff_pos.shape)
    watched = 1.0 / (1.0 + np.exp(-z))
    effective = shown & (z > 0)
    playing_time = np.where(shown, np.round(world.duration[videos_pos] * watched, 3), 0.0)
    boost = np.exp(np.minimum(relative, 5.0))
    actions = {
        name: (effective & (rng.random(aff_pos.shape) < np.minimum(rate * boost, 1.0)))
        for name, rate in (
            ("like", c.like_rate),
            ("follow", c.follow_rate),
            ("forward", c.forward_rate),
            ("comment", c.comment_rate),
        )
    }

    groups = (
        (3, rank_pos),
        (2, _sample(rank_neg, c.group_size, rng)),
        (1, _sample(coarse_neg, c.group_size, rng)),
        (0, _sample(prerank_neg, c.group_size, rng)),
    )
    rank_of_position = np.full((batch, c.pool_size), -1, np.int64)
    np.put_along_axis(rank_of_position, ranked, np.arange(c.coarse_keep)[None, :], axis=1)

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("video", "group", "rank_index")}
    for code, positions in groups:
        cols["video"].append(np.take_along_axis(pool, positions, axis=1))
        cols["group"].append(np.full(positions.shape, code, np.int64))
        cols["rank_index"].append(np.take_along_axis(rank_of_position, positions, axis=1))
    width = sum(p.shape[1] for _, p in groups)
    rest = width - passed

    def pos_then_zero(values: np.ndarray, fill) -> np.ndarray:
        pad = np.full((batch, rest), fill, dtype=values.dtype)
        return np.concatenate([values, pad], axis=1).reshape(-1)

    def flat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=1).reshape(-1)

    shown_i = shown.astype(np.int64)
    return CascadeBatch(
        row_request=np.repeat(np.arange(batch), width),
        video=flat(cols["video"]),
        group=flat(cols["group"]),
        rank_index=flat(cols["rank_index"]),
        rerank_index=pos_then_zero(rerank_index.astype(np.int64), -1),
        realshow=pos_then_zero(shown_i, 0),
        rerank_pos=pos_then_zero(reranked.astype(np.int64), 0),
        rerank_neg=pos_then_zero(1 - reranked.astype(np.int64), 0),
        playing_time=pos_then_zero(playing_time, 0.0),
        effective_view=pos_then_zero(effective.astype(np.int64), 0),
        long_view=pos_then_zero((shown & (z > c.long_view_margin)).astype(np.int64), 0),
        like=pos_then_zero(actions["like"].astype(np.int64), 0),
        follow=pos_then_zero(actions["follow"].astype(np.int64), 0),
        forward=pos_then_zero(actions["forward"].astype(np.int64), 0),
        comment=pos_then_zero(actions["comment"].astype(np.int64), 0),
        feed_videos=np.take_along_axis(videos_pos, rerank_order[:, :GROUP_SIZE], axis=1),
        feed_effective_view=np.take_along_axis(effective, rerank_order[:, :GROUP_SIZE], axis=1),
    )
