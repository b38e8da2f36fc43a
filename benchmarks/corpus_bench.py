"""Cost of retrieval's corpus term: ``CascadeModel.fit`` throughput with and without it.

LCRON alone, then LCRON + the corpus term (``LossConfig.corpus_weight``,
``models/losses/corpus.py``) with the batch's logged candidates as negatives and with its
ground-truth items only
(``corpus_negatives`` "logged" / "in_batch"), on the synthetic transformed batches of
``train_bench.py`` (``--batch`` requests x ``--list-size`` candidates, ``ModelConfig`` defaults,
vocabularies of ``--users`` / ``--videos``). The "logged" term scores every request against every
distinct item of the batch ([batch, distinct items]): the figure printed with it is how many
distinct items the synthetic batches hold.

Per variant: ``--warmup`` untimed steps, then the median of ``--repeats`` timed runs of
``--steps`` steps; the step-time ratio to LCRON alone. CPU only (``CUDA_VISIBLE_DEVICES`` is
cleared); compare only figures taken together, on a quiet machine.

    python benchmarks/corpus_bench.py
    python benchmarks/corpus_bench.py --batch 256 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the figures are CPU figures
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

VARIANTS: dict[str, dict] = {
    "lcron": {"method": "lcron"},
    "lcron + corpus (logged)": {"method": "lcron", "corpus_weight": 1.0},
    "lcron + corpus (in_batch)": {
        "method": "lcron",
        "corpus_weight": 1.0,
        "corpus_negatives": "in_batch",
    },
}


def _run(loss: dict, args: argparse.Namespace, sizes: dict[str, int], batches: list) -> dict:
    import numpy as np
    import tensorflow as tf

    from models.cascade_model import CascadeModel
    from models.config import LossConfig, ModelConfig

    tf.keras.utils.set_random_seed(0)
    stacked = {k: tf.constant([b[k] for b in batches]) for k in batches[0]}
    data = tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2)
    # Popularity-like sampling probabilities over the video vocabulary (Zipf, exponent 1).
    rows = sizes["video_id"]
    log_q = -np.log(np.arange(1, rows + 1, dtype=np.float64))
    log_q = (log_q - np.log(np.exp(log_q).sum())).astype(np.float32)
    model = CascadeModel(
        sizes,
        args.list_size,
        model_config=ModelConfig(),
        loss_config=LossConfig(**loss),
        item_log_q=log_q,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.005))
    model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0)
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
        runs.append((time.perf_counter() - started) / args.steps)
    return {"ms_per_step": 1e3 * statistics.median(runs), "runs_ms": [1e3 * r for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--list-size", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10, help="timed fit steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed fit steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--batches", type=int, default=4, help="distinct synthetic batches")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--videos", type=int, default=50_000)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from benchmarks.train_bench import _vocabulary_sizes, synthetic_batch
    from models import features

    tf.config.set_visible_devices([], "GPU")
    sizes = _vocabulary_sizes(args.users, args.videos)
    batches = [
        synthetic_batch(sizes, args.batch, args.list_size, seed) for seed in range(args.batches)
    ]
    video = features.transformed_name("video_id")
    distinct = statistics.median(len(np.unique(b[video][b[video] > 0])) for b in batches)
    print(
        f"corpus term cost: CascadeModel.fit, batch {args.batch} x list {args.list_size}, CPU, "
        f"median of {args.repeats} runs x {args.steps} steps; {distinct:.0f} distinct items "
        f"per batch ({args.videos} videos)"
    )
    results = {}
    for name, loss in VARIANTS.items():
        results[name] = _run(loss, args, sizes, batches)
        ratio = results[name]["ms_per_step"] / results["lcron"]["ms_per_step"]
        runs = ", ".join(f"{r:.0f}" for r in results[name]["runs_ms"])
        print(
            f"  {name:<26} {results[name]['ms_per_step']:8.0f} ms/step "
            f"(x{ratio:.2f} of lcron; runs: {runs})"
        )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
