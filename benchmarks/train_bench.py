"""Training throughput of the cascade: requests per second of ``CascadeModel.fit`` on the CPU.

The whole network (both stages' forward and backward, the cascade loss, Adam, and the cascade
metrics Keras logs) at the paper's batch of ``--batch`` requests x ``--list-size`` candidates
(default 1024 x 40), ``ModelConfig`` defaults, for LCRON and BCE (or ``--methods``). Inputs are
synthetic transformed batches (``models.preprocessing``'s index layout) over vocabularies of a
realistic size (``--users``, ``--videos``; the other vocabularies scale with them), built before
timing and fed from memory, so the figures are the model's, not the input pipeline's.

Per method: one model, ``--warmup`` steps of ``fit`` (tracing included) not timed, then
``--repeats`` timed ``fit`` runs of ``--steps`` steps each; the figure is the median run's
requests / second. Ends with the LCRON / BCE throughput ratio.

CPU only (``CUDA_VISIBLE_DEVICES`` is cleared). The figures depend on the cores available: on a
shared machine, run it when it is quiet and compare only figures taken together.

    python benchmarks/train_bench.py
    python benchmarks/train_bench.py --steps 10 --methods lcron bce icc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the figures are CPU figures
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script


def _vocabulary_sizes(users: int, videos: int) -> dict[str, int]:
    """Embedding rows per vocabulary: ids + OOV buckets + padding (``preprocessing`` layout)."""
    from models import preprocessing

    ids = {
        "user_id": users,
        "device_id": users,
        "province": 34,
        "video_id": videos,
        "author_id": max(videos // 5, 1),
        "category_level_one": 40,
        "category_level_two": 400,
        "upload_type": 8,
    }
    return {name: n + preprocessing.NUM_OOV_BUCKETS + 1 for name, n in ids.items()}


def synthetic_batch(sizes: dict[str, int], batch: int, list_size: int, seed: int) -> dict:
    """One transformed batch: indices over vocabulary and OOV rows, a tenth of the requests
    with padded candidates, behaviour sequences of random length, graded stage labels."""
    import numpy as np

    from models import features

    xf = features.transformed_name
    rng = np.random.default_rng(seed)
    valid = np.full(batch, list_size)
    valid[: batch // 10] = list_size - list_size // 8
    cand = np.arange(list_size)[None] < valid[:, None]
    seq = np.arange(features.SEQ_LEN)[None] < rng.integers(0, features.SEQ_LEN + 1, batch)[:, None]
    out = {}
    for name in ("user_id", "device_id", "province"):
        out[xf(name)] = rng.integers(1, sizes[name], (batch, 1))
    for name, size in features.SMALL_CATEGORICAL_SIZES.items():
        out[xf(name)] = rng.integers(0, size, (batch, 1))
    out[xf(features.REQUEST_HOUR)] = rng.integers(0, 24, (batch, 1)).astype(np.float32)
    out[xf(features.REQUEST_DAY_OF_WEEK)] = rng.integers(0, 7, (batch, 1)).astype(np.float32)
    for name in ("video_id", "author_id", "category_level_one", "category_level_two"):
        out[xf(name)] = np.where(cand, rng.integers(1, sizes[name], (batch, list_size)), 0)
    out[xf("upload_type")] = np.where(cand, rng.integers(1, sizes["upload_type"], cand.shape), 0)
    for name in (features.DURATION_LOG, features.UPLOAD_TIME, features.ITEM_AGE):
        out[xf(name)] = np.where(cand, rng.normal(size=cand.shape), 0).astype(np.float32)
    for name, vocab in (
        ("seq_video_id", "video_id"),
        ("seq_author_id", "author_id"),
        ("seq_category_level_two", "category_level_two"),
    ):
        out[xf(name)] = np.where(seq, rng.integers(1, sizes[vocab], seq.shape), 0)
    out[xf(features.SEQ_MASK)] = seq.astype(np.float32)
    group = max(list_size // 4, 1)
    grade = np.minimum(np.arange(list_size) // group, 3).astype(np.float32)
    grade[grade == 3] += (group - np.arange((grade == 3).sum())) / group
    labels = np.stack([rng.permutation(grade) for _ in range(batch)])
    out[xf(features.LABEL)] = np.where(cand, labels, 0).astype(np.float32)
    out[xf(features.MASK)] = cand.astype(np.int64)
    return out


def _throughput(method: str, args: argparse.Namespace, sizes: dict[str, int]) -> dict:
    import tensorflow as tf

    from models.cascade_model import CascadeModel
    from models.config import LossConfig, ModelConfig

    tf.keras.utils.set_random_seed(0)
    batches = [
        synthetic_batch(sizes, args.batch, args.list_size, seed) for seed in range(args.batches)
    ]
    stacked = {k: tf.constant([b[k] for b in batches]) for k in batches[0]}
    data = tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2)
    model = CascadeModel(
        sizes, args.list_size, model_config=ModelConfig(), loss_config=LossConfig(method=method)
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.005))
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0)  # trace + warm up
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        history = model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0).history
        seconds = time.perf_counter() - started
        runs.append(args.batch * args.steps / seconds)
    return {
        "method": method,
        "requests_per_second": statistics.median(runs),
        "runs": runs,
        "ms_per_step": 1e3 * args.batch / statistics.median(runs),
        "final_loss": history["loss"][-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--list-size", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20, help="timed fit steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed fit steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--batches", type=int, default=4, help="distinct synthetic batches")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--videos", type=int, default=50_000)
    parser.add_argument("--methods", nargs="*", default=["lcron", "bce"])
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from models.config import ModelConfig

    tf.config.set_visible_devices([], "GPU")
    sizes = _vocabulary_sizes(args.users, args.videos)
    print(
        f"train throughput: CascadeModel.fit, batch {args.batch} x list {args.list_size}, "
        f"CPU, {args.warmup} warm-up steps, median of {args.repeats} runs x {args.steps} steps"
    )
    print(
        f"  TensorFlow {tf.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s) visible, intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}"
    )
    print(f"  {ModelConfig()}")
    print(f"  embedding rows: {sizes}")
    results = {}
    for method in args.methods:
        row = _throughput(method, args, sizes)
        results[method] = row
        runs = ", ".join(f"{r:.0f}" for r in row["runs"])
        print(
            f"  {method:<14} {row['requests_per_second']:9.0f} requests/s "
            f"({row['ms_per_step']:.0f} ms/step; runs: {runs}; loss {row['final_loss']:.3f})"
        )
    if "lcron" in results and "bce" in results:
        ratio = results["lcron"]["requests_per_second"] / results["bce"]["requests_per_second"]
        print(f"  LCRON / BCE throughput ratio: {ratio:.2f} (step time ratio {1 / ratio:.2f}x)")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
