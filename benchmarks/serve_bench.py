"""Bounded load on the cascade service (in-process backend) over loopback.

Starts ``lcron serve --backend inprocess`` in its own process on a free loopback port, then for
each concurrency level (default 1, 8, 32) keeps that many requests in flight for a fixed time
and prints QPS, p50/p99 latency per stage (from the service's ``Server-Timing`` header) and end
to end (client side), and the error count (must be 0; the exit code is 1 otherwise).

Models: by default a REAL trained pair. The script simulates a small log, runs the pipeline's
RecFlowExampleGen -> ImportSchemaGen -> Transform on LocalDagRunner
(``pipeline.ingest_and_transform``), trains the cascade briefly with ``models.trainer``, then
re-exports the trained stages with ``models.exporter.export_stages`` over an item corpus
extended to ``--items`` (default 100,000): the trained items plus synthetic ones (distinct new
ids, so out-of-vocabulary video ids, with author/category/type/upload time/duration drawn from
trained items). The pair is pushed with the pipeline's ``push_pair`` (fresh-process validation,
warmup from eval requests). The load replays the log's eval-day requests (user, context and
behaviour sequence as logged). ``--serving-dir`` serves an existing push instead, with
synthetic users. The output says which.

    lcron bench serve                       # or: python benchmarks/serve_bench.py
    lcron bench serve -- --duration 20 --concurrency 1 8 32 64

The load generator shares the machine with the service: on a small machine its CPU use lowers
the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOP_K = 100  # retrieval's K of the exported pair (the service's K1)
QUERY_SCALARS = ("request_timestamp", "user_id", "device_id", "age", "gender", "province")
SEQUENCES = ("seq_video_id", "seq_author_id", "seq_category_level_two")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def extend_corpus(corpus, size: int, seed: int = 0):
    """The trained ``ItemCorpus`` plus synthetic items up to ``size`` rows.

    Synthetic items get distinct ids above every trained id (so the video id is out of
    vocabulary, as for a freshly uploaded video) and the author, categories and upload type of a
    random trained item (consistent combinations the vocabularies know), its upload time moved
    by up to +/- 12 h within the trained range, and its duration scaled by up to 2x.
    """
    from models.data import ItemCorpus

    extra = size - len(corpus)
    if extra <= 0:
        return corpus
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(corpus), extra)
    columns = {name: np.concatenate([col, col[rows]]) for name, col in corpus.columns.items()}
    first = int(corpus.video_ids.max()) + 1
    columns["video_id"] = np.concatenate(
        [corpus.video_ids, np.arange(first, first + extra, dtype=np.int64)]
    )
    upload = corpus.columns["upload_timestamp"]
    shifted = upload[rows] + rng.integers(-12 * 3_600_000, 12 * 3_600_000, extra)
    columns["upload_timestamp"][len(corpus) :] = np.clip(shifted, upload.min(), upload.max())
    scale = np.exp(rng.uniform(-np.log(2), np.log(2), extra))
    duration = np.maximum(1, np.round(corpus.columns["duration"][rows] * scale))
    columns["duration"][len(corpus) :] = duration.astype(np.int64)
    return ItemCorpus({name: col.astype(np.int64) for name, col in columns.items()})


def _logged_user(serialized: bytes) -> dict:
    """A request's user object from a raw list-wise tf.Example (the ingestion's output)."""
    import tensorflow as tf

    feats = tf.train.Example.FromString(serialized).features.feature
    user = {name: int(feats[name].int64_list.value[0]) for name in QUERY_SCALARS}
    for name in SEQUENCES:
        user[name] = [v for v in feats[name].int64_list.value if v != -1]  # PAD_ID stripped
    return user


def _train_and_push(args: argparse.Namespace, tmp: Path) -> tuple[Path, str, list[dict]]:
    """Simulated log -> ingestion + Transform -> short training -> export over ``--items``
    items -> push. Returns (serving dir, description, the eval-day requests' users)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components.cascade_pusher import pair_push, warmup
    from models import exporter, trainer
    from pipeline.ingest_and_transform import ingest_and_transform
    from simulator import SimulatorConfig, simulate

    started = time.perf_counter()
    simulate(
        SimulatorConfig(),
        tmp / "logs",
        days=args.log_days,
        requests_per_day=args.log_requests,
        seed=args.seed,
    )
    days = list(range(args.log_days))
    artifacts = ingest_and_transform(tmp / "logs", tmp / "ingest", days[:-1], days[-1:])
    transformed = artifacts["transformed_examples"]
    config = {
        "model": {"top_k": TOP_K},
        "trainer": {
            "train_steps": args.train_steps,
            "steps_per_epoch": min(50, args.train_steps),
            "batch_size": 64,
            "seed": args.seed,
        },
    }
    trained = trainer.train_and_export(
        FnArgs(
            train_files=[f"{transformed}/Split-train/*"],
            eval_files=[f"{transformed}/Split-eval/*"],
            transform_output=artifacts["transform_graph"],
            serving_model_dir=str(tmp / "model" / "Format-Serving"),
            model_run_dir=str(tmp / "model" / "model_run"),
            custom_config=config,
        )
    )
    trained_items = len(trained.corpus)
    corpus = extend_corpus(trained.corpus, args.items, seed=args.seed)
    export_dirs = exporter.export_stages(
        trained.model.retrieval,
        trained.model.ranking,
        tft.TFTransformOutput(artifacts["transform_graph"]),
        corpus,
        tmp / "export",
        top_k=TOP_K,
    )
    eval_files = sorted(glob.glob(f"{artifacts['examples']}/Split-eval/*"))
    requests = [
        bytes(r)
        for r in tf.data.TFRecordDataset(eval_files, compression_type="GZIP").as_numpy_iterator()
    ]
    serving_dir = tmp / "serving"
    version = pair_push.push_pair(
        export_dirs, serving_dir, warmup.warmup_records(requests, limit=32), version=1
    )
    train_requests = args.log_requests * (args.log_days - 1)
    desc = (
        f"trained LCRON pair (simulated log {args.log_days} days x {args.log_requests} "
        f"requests, {train_requests} train requests, {args.train_steps} steps), pushed as "
        f"version {version}; corpus {len(corpus)} items = "
        f"{trained_items} trained + {len(corpus) - trained_items} synthetic, retrieval "
        f"K={TOP_K}; load replays {len(requests)} eval-day requests; prepared in "
        f"{time.perf_counter() - started:.0f}s"
    )
    return serving_dir, desc, [_logged_user(r) for r in requests]


def _random_user(rng: np.random.Generator) -> dict:
    seq = rng.integers(0, 10**6, size=int(rng.integers(0, 51))).tolist()
    return {
        "user_id": int(rng.integers(0, 50_000)),
        "device_id": int(rng.integers(0, 50_000)),
        "age": int(rng.integers(0, 8)),
        "gender": int(rng.integers(0, 3)),
        "province": int(rng.integers(0, 34)),
        "seq_video_id": seq,
        "seq_author_id": [v % 5000 for v in seq],
        "seq_category_level_two": [v % 200 for v in seq],
    }


def _prepare_models(args: argparse.Namespace, tmp: Path) -> tuple[Path, str, list[dict]]:
    """Returns (serving dir, description, the users the load sends)."""
    from serving import manifest

    if not args.serving_dir:
        # Keras prints the training epochs on stdout: keep stdout for the figures.
        with contextlib.redirect_stdout(sys.stderr):
            return _train_and_push(args, tmp)
    serving_dir = Path(args.serving_dir)
    version = manifest.read_manifest(serving_dir)["version"]
    rng = np.random.default_rng(0)
    users = [_random_user(rng) for _ in range(512)]
    return serving_dir, f"pushed pair version {version} from {serving_dir}; synthetic users", users


def _server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def _load(url: str, concurrency: int, duration_s: float, k: int, users, seed: int):
    """Closed-loop load: ``concurrency`` workers, each sending its next request on an answer."""
    stats = {"e2e": [], "retrieval": [], "ranking": [], "total": [], "errors": 0, "error_kinds": {}}
    users = [users[i] for i in np.random.default_rng(seed).permutation(len(users))]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        stop = time.perf_counter() + duration_s

        async def worker(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                user = users[n % len(users)]
                n += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/recommend", json={"user": user, "k": k})
                    ok = r.status_code == 200 and len(r.json()["items"]) == k
                    kind = str(r.status_code)
                except httpx.HTTPError as err:
                    ok, kind = False, type(err).__name__
                elapsed = time.perf_counter() - t0
                if not ok:
                    stats["errors"] += 1
                    stats["error_kinds"][kind] = stats["error_kinds"].get(kind, 0) + 1
                    continue
                stats["e2e"].append(elapsed * 1e3)
                for name, ms in _server_timing(r.headers.get("server-timing", "")).items():
                    stats[name].append(ms)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        stats["wall_s"] = time.perf_counter() - started
    return stats


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-dir", help="serve this push instead of training a pair")
    parser.add_argument("--items", type=int, default=100_000, help="item corpus of the export")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps")
    parser.add_argument("--log-days", type=int, default=3, help="simulated days (last: eval)")
    parser.add_argument("--log-requests", type=int, default=250, help="requests per day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32, help="lcron serve --max-batch")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp:
        serving_dir, desc, users = _prepare_models(args, Path(tmp))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--serving-dir", str(serving_dir)]
        cmd += ["--port", str(port), "--log-level", "warning", "--max-batch", str(args.max_batch)]
        proc = subprocess.Popen(cmd, env=env)
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    print("the service exited during startup", file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    print("the service did not become healthy", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print(f"models: {desc}")
            print(
                f"service: lcron serve --backend inprocess --max-batch {args.max_batch} on {url}; "
                f"{os.cpu_count()} CPUs shared by service and load generator"
            )
            print(
                f"load: closed loop, k={args.k}, K1={TOP_K}, {args.duration:.0f}s per level, "
                f"{args.warmup:.0f}s warmup\n"
            )
            asyncio.run(_load(url, 4, args.warmup, args.k, users, seed=99))
            header = (
                f"{'conc':>4} {'requests':>8} {'QPS':>8} {'errors':>6} | "
                f"{'e2e p50':>8} {'e2e p99':>8} | {'srv p50':>8} {'srv p99':>8} | "
                f"{'retr p50':>8} {'retr p99':>8} | {'rank p50':>8} {'rank p99':>8}   (ms)"
            )
            print(header)
            results, total_errors = [], 0
            for conc in args.concurrency:
                s = asyncio.run(_load(url, conc, args.duration, args.k, users, seed=conc))
                n = len(s["e2e"])
                row = {
                    "concurrency": conc,
                    "requests": n,
                    "qps": n / s["wall_s"],
                    "errors": s["errors"],
                    "error_kinds": s["error_kinds"],
                }
                for key, name in (
                    ("e2e", "e2e"),
                    ("total", "server"),
                    ("retrieval", "retrieval"),
                    ("ranking", "ranking"),
                ):
                    row[f"{name}_p50_ms"] = _pct(s[key], 50)
                    row[f"{name}_p99_ms"] = _pct(s[key], 99)
                results.append(row)
                total_errors += s["errors"]
                print(
                    f"{conc:>4} {n:>8} {row['qps']:>8.1f} {s['errors']:>6} | "
                    f"{row['e2e_p50_ms']:>8.2f} {row['e2e_p99_ms']:>8.2f} | "
                    f"{row['server_p50_ms']:>8.2f} {row['server_p99_ms']:>8.2f} | "
                    f"{row['retrieval_p50_ms']:>8.2f} {row['retrieval_p99_ms']:>8.2f} | "
                    f"{row['ranking_p50_ms']:>8.2f} {row['ranking_p99_ms']:>8.2f}"
                )
            print(
                "\ne2e: client-measured round trip; srv: the service's handler time; retr/rank:"
                " each stage's call as timed by the service (Server-Timing)."
            )
            print(f"errors: {total_errors} (must be 0)")
            if args.json_out:
                Path(args.json_out).write_text(
                    json.dumps({"models": desc, "results": results}, indent=2)
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0 if total_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
