"""Replay: what the served cascade returns for a simulated day, scored with the true affinity.

Offline figures (``CascadeEvaluator``, the experiments) rank the 40 candidates an earlier
production cascade logged. The service does something else: retrieval scores the whole exported
corpus, ranking re-scores retrieval's top ``k1``, and the top ``k`` is returned. On a simulated
log the true affinity of every (user, video) pair at request time is known
(``simulator.truth``), so the replay measures what users of the served pair would actually get.

For each replayed request of the day (the context the service would get: user, demographics,
time, behaviour sequence, all from the log), every *policy* answers with ``k`` video ids:

- ``served``: the pushed pair called the way the service calls it: the same backend
  (``serving.backends``), ``serving.app.build_query`` for the inputs, the pair's ``cascade``
  (retrieval's top ``k1`` re-scored by ranking) and ``serving.app.encode_items`` for the best
  ``k`` (best ranking score first, ties in retrieval's order);
- ``production``: what the simulated production cascade showed: its top 10 (``rank_pos``) in
  re-ranking order (the feed whose first 4-8 were exposed);
- ``random``: ``k`` distinct items of the exported corpus, uniformly;
- ``corpus_oracle``: the true best ``k`` of the exported corpus: the ceiling of any model that
  can only return items it was trained on.

The truth of a request is the true affinity of its user with every video uploaded by its time
(``-inf`` for later ones). Metrics per request, averaged over requests:

- ``recall``: ``|answer ∩ B| / min(k, available)``, where ``B`` is the set of videos whose true
  affinity is at least the ``k``-th best of all available videos (ties at the boundary all
  count as best); an answer's repeated ids, padding and ids not available count as misses.
- ``ndcg``: DCG of the answer with gain ``max(affinity, 0)`` (affinity is in standard deviations
  of a random pair, 0 its mean) and discount ``1 / log2(rank + 1)``, over the ideal DCG of the
  true best ``k``. Requests whose ideal DCG is 0 are left out and counted (``ndcg_undefined``).
- ``retrieval_recall`` (served only): ``|retrieval's top k1 ∩ B| / min(k, available)``: how many
  of the true best items retrieval hands to ranking at all.

Items uploaded after the export (new videos of the replayed day, and any video no training day
logged) are not in the exported corpus: the served pair cannot return them, so they count as
misses of ``served``; ``corpus_oracle`` shows how much of the true best set the corpus holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ReplayConfig
from models.features import PAD_ID, SEQUENCE_FEATURES

TRUTH_BATCH = 64  # requests per true-affinity block ([batch, videos] float64)
POLICIES: tuple[str, ...] = ("served", "production", "random", "corpus_oracle")
POLICY_LABELS: dict[str, str] = {
    "served": "served cascade (retrieval over the corpus, ranking on its top k1)",
    "production": "production cascade (logged: what the simulated system showed)",
    "random": "random (k items of the exported corpus)",
    "corpus_oracle": "true best k of the exported corpus (ceiling)",
    "perfect": "true best k of all available items",
}


@dataclasses.dataclass(frozen=True)
class Answers:
    """A policy's answers for a block of ``B`` requests.

    Attributes:
      top_k: int64 [B, n]: video ids, best first (``PAD_ID`` where the policy has none).
      retrieved: int64 [B, k1] retrieval's top items (the served cascade only), or None.
    """

    top_k: np.ndarray
    retrieved: np.ndarray | None = None


# A policy answers a block of requests (their row numbers in the replayed day) given their
# true affinity [B, videos]; only the oracles may read it.
Policy = Callable[[np.ndarray, np.ndarray], Answers]


# --- metrics ---------------------------------------------------------------------------------


def first_occurrences(items: np.ndarray) -> np.ndarray:
    """bool [B, n]: True at the first occurrence of each id in its row (later repeats False)."""
    order = np.argsort(items, axis=1, kind="stable")
    ranked = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros_like(ranked, dtype=bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def _item_affinity(affinity: np.ndarray, items: np.ndarray) -> np.ndarray:
    """affinity [B, V] at ``items`` [B, n]; ``-inf`` for padding, unknown ids and repeats."""
    known = (items >= 0) & (items < affinity.shape[1])
    values = np.take_along_axis(affinity, np.where(known, items, 0), axis=1)
    return np.where(known & first_occurrences(items), values, -np.inf)


def best_threshold(affinity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(threshold [B], size [B]): the k-th best finite affinity of each row (the smallest one if
    fewer than k are available) and ``min(k, available)``."""
    available = np.isfinite(affinity).sum(axis=1)
    if np.any(available == 0):
        raise ValueError("replay: a request has no available video")
    size = np.minimum(k, available)
    top = -np.sort(-affinity, axis=1)[:, :k]
    threshold = np.take_along_axis(top, (size - 1)[:, None], axis=1)[:, 0]
    return threshold, size


def recall(affinity: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """[B]: share of the true best ``k`` (ties included) among the distinct available ``items``.

    Args:
      affinity: [B, V] true affinity, ``-inf`` where a video is not available.
      items: [B, n] answered ids (any n: the answer's top k, or retrieval's top k1).
      k: size of the true best set.
    """
    threshold, size = best_threshold(affinity, k)
    hits = (_item_affinity(affinity, items) >= threshold[:, None]).sum(axis=1)
    # Ties at the boundary may put more than k items in the best set: a list holds at most all.
    return np.minimum(hits, size) / size


def ndcg(affinity: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """[B]: NDCG@k with gain ``max(affinity, 0)``; NaN where the ideal DCG is 0.

    Args:
      affinity: [B, V] true affinity, ``-inf`` where a video is not available.
      items: [B, n] answered ids, best first; only the first ``k`` count.
      k: cut-off.
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.maximum(_item_affinity(affinity, items[:, :k]), 0.0)
    dcg = (gains * discount[: gains.shape[1]]).sum(axis=1)
    ideal_gains = np.maximum(-np.sort(-affinity, axis=1)[:, :k], 0.0)
    ideal = (ideal_gains * discount[: ideal_gains.shape[1]]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


# --- policies --------------------------------------------------------------------------------


def fixed_policy(top_k: np.ndarray, retrieved: np.ndarray | None = None) -> Policy:
    """Answers given in advance for every replayed request (rows index them)."""

    def answer(rows: np.ndarray, _affinity: np.ndarray) -> Answers:
        return Answers(top_k[rows], None if retrieved is None else retrieved[rows])

    return answer


def oracle_policy(k: int, allowed: np.ndarray | None = None) -> Policy:
    """The true best ``k`` (of the ``allowed`` ids only, if given): reads the truth."""

    def answer(_rows: np.ndarray, affinity: np.ndarray) -> Answers:
        scores = affinity
        if allowed is not None:
            keep = np.full(affinity.shape[1], -np.inf)
            inside = allowed[allowed < affinity.shape[1]]
            keep[inside] = 0.0
            scores = affinity + keep[None, :]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(scores, order, axis=1)
        return Answers(np.where(np.isfinite(chosen), order, PAD_ID).astype(np.int64))

    return answer


def random_policy(k: int, corpus: np.ndarray, seed: int) -> Policy:
    """``k`` distinct ids of ``corpus`` available at the request's time, uniformly."""
    rng = np.random.default_rng(seed)

    def answer(_rows: np.ndarray, affinity: np.ndarray) -> Answers:
        out = np.full((len(affinity), k), PAD_ID, np.int64)
        inside = corpus[corpus < affinity.shape[1]]
        for i in range(len(affinity)):
            pool = inside[np.isfinite(affinity[i, inside])]
            picked = rng.choice(pool, size=min(k, len(pool)), replace=False)
            out[i, : len(picked)] = picked
        return Answers(out)

    return answer


# --- the served cascade ----------------------------------------------------------------------


async def _serve_all(
    pair: Any, requests: Any, k: int, k1: int, concurrency: int
) -> tuple[np.ndarray, np.ndarray]:
    from serving.app import User, build_query, encode_items

    n = len(requests)
    top_k = np.full((n, k), PAD_ID, np.int64)
    retrieved = np.full((n, k1), PAD_ID, np.int64)
    ctx = requests.context

    async def one(i: int) -> None:
        user = User(
            user_id=int(ctx["user_id"][i]),
            device_id=int(ctx["device_id"][i]),
            age=int(ctx["age"][i]),
            gender=int(ctx["gender"][i]),
            province=int(ctx["province"][i]),
            request_timestamp=int(ctx["request_timestamp"][i]),
            **{name: requests.sequence(name, i) or None for name in SEQUENCE_FEATURES},
        )
        # What /v1/recommend does: the pushed cascade's chain (retrieval's top k1 re-scored by
        # each later stage), then the service's own encoding of the best k.
        result = await pair.cascade(build_query(user), k1)
        if not np.all(np.isfinite(result.ranking_scores)):
            raise RuntimeError(f"ranking: non-finite scores for request {ctx['request_id'][i]}")
        items = json.loads(encode_items(result, k, pair))["items"]
        top_k[i, : len(items)] = [item["video_id"] for item in items]
        retrieved[i, : len(result.retrieved)] = result.retrieved

    for start in range(0, n, concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(start + concurrency, n))))
    return top_k, retrieved


async def _serve(
    serving_dir: Path, backend: Any, requests: Any, k: int, k1: int, concurrency: int
) -> tuple[np.ndarray, np.ndarray, int]:
    from serving.manifest import read_manifest

    await backend.start()
    try:
        manifest = read_manifest(serving_dir)
        pair = await backend.load_pair(serving_dir, manifest)
        top_k, retrieved = await _serve_all(pair, requests, k, k1, concurrency)
        return top_k, retrieved, int(pair.version)
    finally:
        await backend.aclose()


def serve_requests(
    serving_dir: str | Path,
    requests: Any,
    *,
    k: int,
    k1: int,
    concurrency: int = 32,
    backend: Any = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Answers of the pair pushed to ``serving_dir`` for ``requests``
    (``simulator.truth.LoggedRequests``).

    Args:
      backend: a ``serving.backends.Backend`` (default: in process).

    Returns:
      (top k ids [R, k], retrieval's top k1 [R, k1], the pair's version); ``PAD_ID`` pads.
    """
    if backend is None:
        from serving.backends import InProcessBackend

        backend = InProcessBackend(max_batch=concurrency)
    return asyncio.run(_serve(Path(serving_dir), backend, requests, k, k1, concurrency))


# --- scoring ---------------------------------------------------------------------------------


def score_policies(
    day: Any, rows: np.ndarray, policies: Mapping[str, Policy], k: int
) -> dict[str, dict[str, Any]]:
    """Every policy's metrics over the requests ``rows`` of ``day`` (a ``ReplayDay``).

    Returns:
      {policy: {"recall", "ndcg", ["retrieval_recall"], "requests", "ndcg_undefined"}}, means
      over requests; the per-request values under "per_request".
    """
    collected: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in policies}
    for start in range(0, len(rows), TRUTH_BATCH):
        block = rows[start : start + TRUTH_BATCH]
        affinity = day.true_affinity(block)
        positions = np.arange(start, start + len(block))
        for name, policy in policies.items():
            answers = policy(positions, affinity)
            values = {
                "recall": recall(affinity, answers.top_k[:, :k], k),
                "ndcg": ndcg(affinity, answers.top_k, k),
            }
            if answers.retrieved is not None:
                values["retrieval_recall"] = recall(affinity, answers.retrieved, k)
            for metric, value in values.items():
                collected[name].setdefault(metric, []).append(value)
    out: dict[str, dict[str, Any]] = {}
    for name, metrics in collected.items():
        per_request = {m: np.concatenate(v) for m, v in metrics.items()}
        entry: dict[str, Any] = {
            m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for m, v in per_request.items()
        }
        entry["requests"] = int(len(rows))
        entry["ndcg_undefined"] = int(np.isnan(per_request["ndcg"]).sum())
        entry["per_request"] = {m: v.tolist() for m, v in per_request.items()}
        out[name] = entry
    return out


def _replayed_rows(n: int, config: ReplayConfig) -> np.ndarray:
    if config.max_requests is None or config.max_requests >= n:
        return np.arange(n)
    rng = np.random.default_rng([config.seed, 1])
    return np.sort(rng.choice(n, size=config.max_requests, replace=False))


def replay(
    serving_dir: str | Path,
    sim_log: str | Path,
    config: ReplayConfig | None = None,
    *,
    backend: Any = None,
) -> dict[str, Any]:
    """Replays a day of the simulated log in ``sim_log`` against the pair in ``serving_dir``.

    Args:
      serving_dir: a push dir (``manifest.json`` + both stages).
      sim_log: a folder written by ``lcron simulate`` (its manifest rebuilds the truth).
      config: what to replay and the service's k / k1.
      backend: a ``serving.backends.Backend`` (default: in process); e.g. TF Serving's.

    Returns:
      The report: settings, corpus coverage and every policy's metrics (see module docstring).
    """
    from simulator import truth

    config = config or ReplayConfig()
    day = truth.load_day(sim_log, config.day)
    train_days = config.train_days
    if train_days is None:
        train_days = tuple(range(day.day))
    if not train_days:
        raise ValueError(
            f"replay: day {day.day} has no earlier day to train on; pass train_days explicitly"
        )
    corpus = truth.logged_items(sim_log, train_days)
    rows = _replayed_rows(len(day.requests), config)
    requests = day.requests.take(rows)
    served, retrieved, version = serve_requests(
        serving_dir,
        requests,
        k=config.k,
        k1=config.k1,
        concurrency=config.concurrency,
        backend=backend,
    )
    outside = served[(served != PAD_ID) & ~np.isin(served, corpus)]
    policies = {
        "served": fixed_policy(served, retrieved),
        "production": fixed_policy(requests.production),
        "random": random_policy(config.k, corpus, config.seed),
        "corpus_oracle": oracle_policy(config.k, corpus),
    }
    results = score_policies(day, rows, policies, config.k)
    results["served"]["outside_corpus"] = int(outside.size)
    results["served"]["short_answers"] = int((served == PAD_ID).any(axis=1).sum())
    return {
        "serving_dir": str(serving_dir),
        "version": version,
        "sim_log": str(sim_log),
        "day": day.day,
        "train_days": list(train_days),
        "config": config.to_dict(),
        "requests": int(len(rows)),
        "corpus_items": int(len(corpus)),
        "available_items_mean": float(day.available()[rows].mean()),
        "policies": results,
    }


def summary_row(report: Mapping[str, Any]) -> dict[str, float]:
    """The replay figures an experiment cell records (``replay_<policy>_<metric>``)."""
    row = {}
    for policy, metrics in report["policies"].items():
        for metric in ("recall", "ndcg", "retrieval_recall"):
            if metric in metrics:
                row[f"replay_{policy}_{metric}"] = metrics[metric]
    return row


def format_report(report: Mapping[str, Any]) -> str:
    """A Markdown table of one replay."""
    k, k1 = report["config"]["k"], report["config"]["k1"]
    lines = [
        f"replay of day {report['day']} ({report['requests']} requests) against pair "
        f"{report['version']} in {report['serving_dir']}; exported corpus: "
        f"{report['corpus_items']} items (days {report['train_days']}), "
        f"{report['available_items_mean']:.0f} available per request on average",
        "",
        f"| policy | Recall@{k} (true best {k}) | NDCG@{k} (true affinity) | "
        f"retrieval: true best {k} in its top {k1} |",
        "|---|---|---|---|",
    ]
    for name, metrics in report["policies"].items():
        stage = metrics.get("retrieval_recall")
        lines.append(
            f"| {POLICY_LABELS.get(name, name)} | {metrics['recall']:.4f} | "
            f"{metrics['ndcg']:.4f} | {'' if stage is None else f'{stage:.4f}'} |"
        )
    served = report["policies"].get("served", {})
    if served.get("outside_corpus"):
        lines.append(
            f"\nwarning: {served['outside_corpus']} served items are not in the corpus of days "
            f"{report['train_days']}: pass the days the pair was trained on (--train-days)"
        )
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], path: str | Path) -> None:
    """Writes the report as JSON (per-request values included)."""
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=True))
