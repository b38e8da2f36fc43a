"""Cost of the cascade losses: forward + backward time per loss, and LCRON's paths as lists grow.

Part 1: every loss of ``models.losses.LOSSES`` on a batch of ``--batch`` x ``--list-size``
(default 1024 x 40, the paper's setting), two stages, the gradient taken with respect to both
stages' logits inside one ``tf.function``; after a warm-up call, the median of ``--repeats``
timed calls, and the LCRON / BCE ratio. LCRON runs with ``LossConfig``'s default path
(``lcron_impl="auto"``).

Part 2: LCRON's implementations (``models.losses.lcron.IMPLS``: "dense", today's form with
[batch, n, n] permutation matrices and autodiff; "blocked", row blocks with a hand-derived
gradient; their XLA-compiled twins) at list sizes ``--sizes`` (default 40, 200, 1000) on a
batch of ``--batch``. Every (size, path) runs in a fresh subprocess (so each peak is its own):

  wall     median wall-clock seconds of a timed call (after one untimed call: tracing, XLA)
  cpu      median CPU seconds of the process during a timed call (all threads); on a loaded
           machine this is steadier than wall time, since waiting for a core does not count
  peak     the process's peak resident memory during the timed calls (TensorFlow itself, the
           inputs and the steps; the high-water mark is reset after the warm-up call, so
           tracing and XLA's compilation are not in it), and ``base``, its resident memory
           before the first call (TensorFlow and the inputs); ``peak - base`` is what the loss
           costs (a step's tensors, and what the allocator keeps between steps)
  vs dense the path's wall (and cpu) time over the dense path's at the same size, same run

A path whose memory, projected from its peak at the largest smaller size measured (dense:
O(batch n^2)), exceeds ``--memory-budget-gib`` (default 23) is skipped and its projection is
printed instead. After each size, a line names the path that "auto" (``LossConfig``'s default)
resolves to there.

CPU only (``CUDA_VISIBLE_DEVICES`` is cleared). The default run takes about 10 minutes on 2
idle cores (most of it the dense path at list 200 and the blocked paths at list 1000).

    python benchmarks/loss_bench.py
    python benchmarks/loss_bench.py --sizes 40 200 --paths dense blocked --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the figures are CPU figures
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

PATHS = ("dense", "blocked", "dense_xla", "blocked_xla")


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


def _step_fn(method: str, stages, jit_compile: bool = False, lcron_impl: str = "auto"):
    """A compiled forward + backward of the loss named ``method`` (XLA if ``jit_compile``)."""
    import tensorflow as tf

    from models import losses
    from models.config import LossConfig

    layer = losses.get(LossConfig(method=method, lcron_impl=lcron_impl))

    @tf.function(jit_compile=jit_compile)
    def step(labels, mask):
        with tf.GradientTape() as tape:
            loss = layer(stages, labels, mask)["loss"]
        grads = tape.gradient(loss, [*stages, *layer.trainable_weights])
        return loss, grads

    return step


def _timed(step, labels, mask, repeats: int, after_warmup=None) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` calls (after one untimed call)."""
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), step(labels, mask))  # trace + warm up
    if after_warmup is not None:
        after_warmup()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        tf.nest.map_structure(lambda t: t.numpy(), step(labels, mask))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _rss_mib() -> float:
    """Resident memory of this process now, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Resets the process's peak resident memory (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    """Peak resident memory since the last reset (or since the process started), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _one(batch: int, list_size: int, path: str, repeats: int) -> dict:
    """LCRON through one path at one size, in this (fresh) process."""
    from models.losses import lcron

    stages, labels, mask = _inputs(batch, list_size)
    step = _step_fn("lcron", stages, jit_compile=path.endswith("_xla"), lcron_impl=path)
    base = {"mib": _rss_mib()}

    def start_measuring() -> None:  # after the warm-up call: tracing and XLA are not counted
        base["reset"] = _reset_peak()

    wall, cpu = _timed(step, labels, mask, repeats, after_warmup=start_measuring)
    peak = _peak_mib()
    return {
        "list_size": list_size,
        "path": path,
        "resolves_to": lcron.resolve_impl(path, list_size),
        "wall": wall,
        "cpu": cpu,
        "peak_mib": peak,
        "base_mib": base["mib"],
        "peak_is_since_start": not base["reset"],
    }


# The dense form's forward + backward holds about ten [batch, n, n] float32 tensors at once
# (measured: 1.8 GiB over the process's base at batch 1024 x list 200); the floor of its
# projection when no smaller size was measured.
_DENSE_LIVE_MATRICES = 10


def _projected_gib(path: str, size: int, batch: int, rows: list[dict]) -> float | None:
    """Peak memory of ``path`` at ``size`` projected from its largest smaller measured size
    (the dense forms grow with n^2, the blocked ones with n); for the dense forms at least
    ``_DENSE_LIVE_MATRICES`` [batch, n, n] matrices. None: nothing to project from."""
    dense = path.startswith("dense")
    floor = _DENSE_LIVE_MATRICES * batch * size**2 * 4 / 2**30 if dense else None
    smaller = [r for r in rows if r["path"] == path and r["list_size"] < size and "wall" in r]
    if not smaller:
        return floor
    ref = max(smaller, key=lambda r: r["list_size"])
    growth = (ref["peak_mib"] - ref["base_mib"]) * (size / ref["list_size"]) ** (2 if dense else 1)
    projected = (ref["base_mib"] + growth) / 1024
    return max(projected, floor) if dense else projected


def _part_one(args: argparse.Namespace) -> dict[str, float]:
    import tensorflow as tf

    from models import losses

    tf.config.set_visible_devices([], "GPU")
    methods = args.methods or sorted(losses.LOSSES)
    print(
        f"Part 1. forward+backward, batch {args.batch} x list {args.list_size}, two stages, "
        f"CPU, median of {args.repeats} (LCRON: lcron_impl='auto')"
    )
    per_method = {}
    for method in methods:
        stages, labels, mask = _inputs(args.batch, args.list_size)
        wall, cpu = _timed(_step_fn(method, stages), labels, mask, args.repeats)
        per_method[method] = wall
        print(f"  {method:<14} {wall * 1e3:9.1f} ms wall {cpu * 1e3:9.1f} ms cpu")
    if "lcron" in per_method and "bce" in per_method:
        print(f"  LCRON / BCE ratio (wall): {per_method['lcron'] / per_method['bce']:.1f}x")
    return per_method


def _part_two(args: argparse.Namespace) -> list[dict]:
    from models.losses import lcron

    print(
        f"Part 2. LCRON forward+backward by path, batch {args.batch}, CPU, fresh process per "
        f"row, median of {args.repeats} (list >= {args.large} : {args.large_repeats})"
    )
    print(
        f"  {'list':>5} {'path':<12} {'wall ms':>10} {'cpu ms':>10} {'peak MiB':>9} "
        f"{'base MiB':>9} {'wall/dense':>10} {'cpu/dense':>9}"
    )
    rows: list[dict] = []
    for size in args.sizes:
        repeats = args.large_repeats if size >= args.large else args.repeats
        for path in args.paths:
            projected = _projected_gib(path, size, args.batch, rows)
            if projected is not None and projected > args.memory_budget_gib:
                rows.append({"list_size": size, "path": path, "projected_gib": projected})
                print(
                    f"  {size:>5} {path:<12} skipped: projected peak {projected:.0f} GiB > "
                    f"{args.memory_budget_gib:g} GiB budget"
                )
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{size}:{path}",
                    "--batch",
                    str(args.batch),
                    "--repeats",
                    str(repeats),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                rows.append({"list_size": size, "path": path, "error": out.returncode})
                tail = out.stderr.strip().splitlines()[-1:] or ["?"]
                print(f"  {size:>5} {path:<12} failed (exit {out.returncode}): {tail[0][:90]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            dense = next(
                (
                    r
                    for r in rows
                    if r["path"] == "dense" and r["list_size"] == size and "wall" in r
                ),
                None,
            )
            ratio = (
                f"{row['wall'] / dense['wall']:>10.2f} {row['cpu'] / dense['cpu']:>9.2f}"
                if dense
                else f"{'-':>10} {'-':>9}"
            )
            name = path if path != "auto" else f"auto={row['resolves_to']}"
            print(
                f"  {size:>5} {name:<12} {row['wall'] * 1e3:>10.1f} {row['cpu'] * 1e3:>10.1f} "
                f"{row['peak_mib']:>9.0f} {row['base_mib']:>9.0f} {ratio}",
                flush=True,
            )
        print(f"  {size:>5} auto (LossConfig's default) = {lcron.resolve_impl('auto', size)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--list-size", type=int, default=40, help="part 1's list size")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure")
    parser.add_argument("--methods", nargs="*", default=None, help="part 1; default: every loss")
    parser.add_argument("--sizes", type=int, nargs="*", default=[40, 200, 1000])
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=[*PATHS, "auto"])
    parser.add_argument("--large", type=int, default=1000, help="lists this long or longer...")
    parser.add_argument("--large-repeats", type=int, default=2, help="...get this many calls")
    parser.add_argument("--memory-budget-gib", type=float, default=23.0)
    parser.add_argument("--skip-part-one", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:  # child process of part 2
        size, path = args.one.split(":")
        print(json.dumps(_one(args.batch, int(size), path, args.repeats)))
        return 0

    per_method = {} if args.skip_part_one else _part_one(args)
    rows = _part_two(args)
    if args.json:
        print(json.dumps({"per_method_seconds": per_method, "lcron_paths": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
