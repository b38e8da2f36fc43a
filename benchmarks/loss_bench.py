"""Cost of the cascade losses: forward + backward time per loss, and LCRON as lists grow.

Part 1: every loss of ``models.losses.LOSSES`` on a batch of ``--batch`` x ``--list-size``
(default 1024 x 40, the paper's setting), two stages, the gradient taken with respect to both
stages' logits inside one ``tf.function``; after a warm-up call, the median of ``--repeats``
timed calls, and the LCRON / BCE ratio; then LCRON and BCE again under XLA
(``tf.function(jit_compile=True)``), which the losses support.

Part 2: LCRON at list sizes ``--scaling-sizes`` (default 40, 100, 200, 500) on a batch of
``--scaling-batch``: median time and the peak tensor memory of a step, and BCE's median time
at the same size with the LCRON / BCE ratio. Each size runs in a fresh subprocess with
TensorFlow's BFC allocator on the CPU, whose statistics give the peak tensor memory of LCRON's
timed calls. LCRON's NeuralSort holds several [batch, n, n] tensors per stage, so memory grows
with n^2.

CPU only (``CUDA_VISIBLE_DEVICES`` is cleared), so figures are comparable across machines of the
project; the default run takes about 2 minutes on 2 cores.

    python benchmarks/loss_bench.py
    python benchmarks/loss_bench.py --repeats 3 --scaling-sizes 40 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the figures are CPU figures
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script


def _inputs(batch: int, list_size: int, seed: int = 0):
    """Random logits for two stages and RecFlow-like graded labels with a little padding."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    group = max(list_size // 4, 1)
    labels = np.zeros((batch, list_size), np.float32)
    labels[:, :group] = 3 + (group - np.arange(group)) / group
    labels[:, group : 2 * group] = 2
    labels[:, 2 * group : 3 * group] = 1
    labels = np.take_along_axis(labels, rng.permutation(list_size)[None].repeat(batch, 0), 1)
    mask = np.ones((batch, list_size), np.float32)
    mask[: batch // 10, -(list_size // 8) :] = 0  # a tenth of the requests are short
    stages = [tf.Variable(rng.normal(size=(batch, list_size)).astype(np.float32)) for _ in "ab"]
    return stages, tf.constant(labels), tf.constant(mask)


def _step_fn(method: str, stages, jit_compile: bool = False):
    """A compiled forward + backward of the loss named ``method`` (XLA if ``jit_compile``)."""
    import tensorflow as tf

    from models import losses
    from models.config import LossConfig

    layer = losses.get(LossConfig(method=method))

    @tf.function(jit_compile=jit_compile)
    def step(labels, mask):
        with tf.GradientTape() as tape:
            loss = layer(stages, labels, mask)["loss"]
        grads = tape.gradient(loss, [*stages, *layer.trainable_weights])
        return loss, grads

    return step


def _median_seconds(step, labels, mask, repeats: int) -> float:
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), step(labels, mask))  # trace + warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), step(labels, mask))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _one_size(batch: int, list_size: int, repeats: int) -> dict[str, float]:
    """LCRON at one list size, in this process: median seconds and peak tensor memory (MiB),
    and BCE's median seconds at the same size for the ratio.

    Memory comes from TensorFlow's own allocator statistics, which exist on CPU when the BFC
    allocator is on (``TF_CPU_ALLOCATOR_USE_BFC``, set by the parent for this process); the
    peak is reset after the tracing / warm-up call, so it is the peak of LCRON's timed steps
    (inputs and variables included, a few MiB). BCE is timed after LCRON's peak is read.
    """
    import tensorflow as tf

    stages, labels, mask = _inputs(batch, list_size)
    step = _step_fn("lcron", stages)
    _median_seconds(step, labels, mask, 1)  # trace + warm up
    tf.config.experimental.reset_memory_stats("CPU:0")
    seconds = _median_seconds(step, labels, mask, repeats)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    bce_seconds = _median_seconds(_step_fn("bce", stages), labels, mask, repeats)
    return {
        "list_size": list_size,
        "seconds": seconds,
        "peak_mib": peak,
        "bce_seconds": bce_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--list-size", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every loss")
    parser.add_argument("--scaling-batch", type=int, default=128)
    parser.add_argument("--scaling-sizes", type=int, nargs="*", default=[40, 100, 200, 500])
    parser.add_argument("--scaling-repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one_size is not None:  # child process of part 2
        print(json.dumps(_one_size(args.scaling_batch, args.one_size, args.scaling_repeats)))
        return 0

    import tensorflow as tf

    from models import losses

    tf.config.set_visible_devices([], "GPU")
    methods = args.methods or sorted(losses.LOSSES)
    print(
        f"forward+backward, batch {args.batch} x list {args.list_size}, two stages, CPU, "
        f"median of {args.repeats}"
    )
    per_method = {}
    for method in methods:
        stages, labels, mask = _inputs(args.batch, args.list_size)
        seconds = _median_seconds(_step_fn(method, stages), labels, mask, args.repeats)
        per_method[method] = seconds
        print(f"  {method:<14} {seconds * 1e3:9.1f} ms")
    if "lcron" in per_method and "bce" in per_method:
        print(f"  LCRON / BCE ratio: {per_method['lcron'] / per_method['bce']:.1f}x")
        xla = {}
        for method in ("lcron", "bce"):
            stages, labels, mask = _inputs(args.batch, args.list_size)
            step = _step_fn(method, stages, jit_compile=True)
            xla[method] = _median_seconds(step, labels, mask, args.repeats)
        print(
            f"  with XLA (jit_compile=True): lcron {xla['lcron'] * 1e3:.1f} ms, "
            f"bce {xla['bce'] * 1e3:.1f} ms, ratio {xla['lcron'] / xla['bce']:.1f}x"
        )
        per_method.update({f"{m}_xla": v for m, v in xla.items()})

    print(
        f"LCRON as the list grows, batch {args.scaling_batch}, median of {args.scaling_repeats}"
        " (peak tensor memory of an LCRON step, BCE time for the ratio, fresh process per size)"
    )
    scaling = []
    for size in args.scaling_sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one-size",
                str(size),
                "--scaling-batch",
                str(args.scaling_batch),
                "--scaling-repeats",
                str(args.scaling_repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
            # CPU memory statistics need TensorFlow's BFC allocator on the CPU.
            env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true"},
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        scaling.append(row)
        print(
            f"  list {size:>4}: lcron {row['seconds'] * 1e3:9.1f} ms   "
            f"peak {row['peak_mib']:8.1f} MiB   bce {row['bce_seconds'] * 1e3:7.1f} ms   "
            f"LCRON / BCE {row['seconds'] / row['bce_seconds']:6.1f}x"
        )
    if args.json:
        print(json.dumps({"per_method_seconds": per_method, "lcron_scaling": scaling}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
