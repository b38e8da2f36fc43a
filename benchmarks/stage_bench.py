"""Cost of one batch through every stage, by batch size and TensorFlow thread settings.

Loads a pushed cascade (any number of stages) the way ``lcron serve`` does
(``serving.backends.InProcessBackend``) and times the in-process cascade path
(``_InProcessPair._cascade_batch``: retrieval, then each later stage, on a ``[B, ...]`` batch)
for each batch size, in a fresh process per thread setting (TensorFlow fixes its pools at
start-up). Prints, per setting and batch size, the wall time of a batch
(median), its split between the stages, and the process's CPU time per request: the figure that
bounds throughput (requests/s per core = 1000 / CPU ms per request) and that a busy machine
disturbs far less than latency.

    lcron bench stage -- --serving-dir outputs/serving
    lcron bench stage -- --serving-dir DIR --threads 0,0 1,1 2,1 --batches 1 4 16 32

``--threads INTRA,INTER``: TensorFlow's intra-/inter-op pool sizes (0: TensorFlow's default, one
per core). Users: synthetic (random ids and behaviour sequences), or ``--users FILE`` (a JSON
list of the service's ``user`` objects).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> dict:
    """Runs in the child process: fixed threads, every batch size."""
    import asyncio

    from serving import manifest as manifest_lib
    from serving.app import User, build_query
    from serving.backends import InProcessBackend, configure_tf_threads

    intra, inter = (int(v) or None for v in args.worker.split(","))
    configure_tf_threads(intra, inter)
    backend = InProcessBackend()
    manifest = manifest_lib.read_manifest(args.serving_dir)
    pair = asyncio.run(backend.load_pair(Path(args.serving_dir), manifest))
    users = _users(args)
    queries = [build_query(User(**u)) for u in users]
    cuts = pair.cut_offs(args.k1)
    out = {"threads": args.worker, "order": list(pair.order), "batches": {}}
    for batch in args.batches:
        rows = [queries[i % len(queries)] for i in range(batch)]
        query = {k: np.concatenate([q[k] for q in rows]) for k in rows[0]}
        for _ in range(3):  # warm: first calls trace and allocate
            pair._cascade_batch(cuts, query)
        iterations = max(5, args.requests // batch)
        walls, stage_ms = [], {stage: [] for stage in pair.order}
        cpu0 = time.process_time()
        for _ in range(iterations):
            started = time.perf_counter()
            result = pair._cascade_batch(cuts, query)
            walls.append((time.perf_counter() - started) * 1e3)
            for stage, values in stage_ms.items():
                values.append(float(result[f"{stage}_ms"][0]))
        cpu_ms = (time.process_time() - cpu0) * 1e3
        out["batches"][batch] = {
            "wall_ms": float(np.median(walls)),
            "stage_ms": {stage: float(np.median(v)) for stage, v in stage_ms.items()},
            "first_p99_ms": float(np.percentile(stage_ms[pair.first], 99)),
            "cpu_ms_per_request": cpu_ms / (iterations * batch),
        }
    asyncio.run(backend.aclose())
    return out


def _users(args: argparse.Namespace) -> list[dict]:
    if args.users:
        return json.loads(Path(args.users).read_text())
    from serving.loadgen import synthetic_user

    rng = np.random.default_rng(0)
    return [synthetic_user(rng) for _ in range(256)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-dir", required=True, help="a push dir (manifest.json)")
    parser.add_argument("--users", help="JSON list of user objects (default: synthetic)")
    parser.add_argument("--threads", nargs="+", default=["0,0", "1,1", "2,1"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests timed per size")
    parser.add_argument("--k1", type=int, default=100)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # INTRA,INTER: the child's mode
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    results = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--worker", threads, *(argv or sys.argv[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    order = results[0]["order"]
    print(f"cascade {order}: {args.serving_dir}; K1={args.k1}; {os.cpu_count()} CPUs; medians (ms)")
    stage_header = f"{order[0]:>9} {'1st p99':>8} " + " ".join(f"{n:>9}" for n in order[1:])
    print(
        f"{'intra,inter':>11} {'batch':>5} | {'batch wall':>10} {stage_header} | "
        f"{'CPU ms/req':>10} {'req/s/core':>10}"
    )
    for result in results:
        for batch, row in result["batches"].items():
            stages = row["stage_ms"]
            later = " ".join(f"{stages[n]:>9.2f}" for n in order[1:])
            print(
                f"{result['threads']:>11} {batch:>5} | {row['wall_ms']:>10.2f} "
                f"{stages[order[0]]:>9.2f} {row['first_p99_ms']:>8.2f} {later} | "
                f"{row['cpu_ms_per_request']:>10.2f} {1000 / row['cpu_ms_per_request']:>10.0f}"
            )
    print("threads 0: TensorFlow's default (one per core); 1st p99: over the timed batches.")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
