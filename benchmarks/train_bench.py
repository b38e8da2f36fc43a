"""Training throughput of the cascade: requests per second of ``CascadeModel.fit`` on the CPU.

The whole network (both stages' forward and backward, the cascade loss, Adam, and the cascade
metrics Keras logs) at the paper's batch of ``--batch`` requests x ``--list-size`` candidates
(default 1024 x 40), ``ModelConfig`` defaults, for LCRON and BCE (or ``--methods``). Inputs are
synthetic transformed batches (``models.preprocessing``'s index layout) over vocabularies of a
realistic size (``--users``, ``--videos``; the other vocabularies scale with them), built before
timing and fed from memory, so the figures are the model's, not the input pipeline's.

Per method and cascade-metric setting (``--train-metrics-every``: 1, every step as before, and
``TrainerConfig``'s default): one model, ``--warmup`` steps of ``fit`` (tracing included) not
timed, then ``--repeats`` rounds in which every model runs ``--steps`` timed steps in turn; the
figures are the median run's requests / second and the median CPU time per step (all threads;
steadier than wall time on a loaded machine). ``lcron:dense`` is LCRON through today's dense
path, ``lcron`` through ``LossConfig``'s default; the run ends with each LCRON's step time over
BCE's under the same metric setting (wall and CPU). Before this work: ``lcron:dense`` with
metrics every step; after: ``lcron`` with the default setting.

Each row also says how often Keras traced the train function: twice is right (tf.function
traces the first call again after the optimizer creates its variables there); more would mean
a retrace during training. ``--input-pipeline`` also times the Trainer's input pipeline alone
(``models.data.input_fn`` over the same requests written as GZIP TFRecords of tf.Examples),
to compare with the step rate: the model above is fed from memory.

``--profile DIR`` also traces ``--profile-steps`` steps per method with the TensorFlow profiler
(``tf.profiler.experimental``; open DIR in TensorBoard's profile plugin) and prints the op time
per step by group: the two stages' forward and backward, the loss's forward and backward, the
optimizer, the input pipeline, and the metric updates with the rest.

CPU only (``CUDA_VISIBLE_DEVICES`` is cleared). The figures depend on the cores available: on a
shared machine, run it when it is quiet and compare only figures taken together.

    python benchmarks/train_bench.py
    python benchmarks/train_bench.py --steps 10 --methods lcron bce icc
    python benchmarks/train_bench.py --profile /tmp/train_profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


class _FeatureSpecOnly:
    """The one method of ``tft.TFTransformOutput`` that ``models.data.input_fn`` calls."""

    def __init__(self, spec: dict) -> None:
        self._spec = spec

    def transformed_feature_spec(self) -> dict:
        return dict(self._spec)


def _input_pipeline(args: argparse.Namespace, sizes: dict[str, int]) -> float:
    """Requests / second of the Trainer's input pipeline alone (``models.data.input_fn``:
    GZIP TFRecords of transformed tf.Examples, parsed and batched, shuffled and repeated) over
    the synthetic requests written once to a temporary folder."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from models import data

    batches = [
        synthetic_batch(sizes, args.batch, args.list_size, seed) for seed in range(args.batches)
    ]
    spec = {
        name: tf.io.FixedLenFeature(
            value.shape[1:], tf.int64 if np.issubdtype(value.dtype, np.integer) else tf.float32
        )
        for name, value in batches[0].items()
    }
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "requests.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for batch in batches:
                for i in range(args.batch):
                    feature = {}
                    for name, value in batch.items():
                        row = value[i].ravel()
                        if np.issubdtype(row.dtype, np.integer):
                            feature[name] = tf.train.Feature(
                                int64_list=tf.train.Int64List(value=row)
                            )
                        else:
                            feature[name] = tf.train.Feature(
                                float_list=tf.train.FloatList(value=row)
                            )
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
        dataset = data.input_fn(
            path, _FeatureSpecOnly(spec), args.batch, shuffle=True, repeat=True, seed=0
        )
        iterator = iter(dataset)
        next(iterator)
        started = time.perf_counter()
        for _ in range(args.steps):
            next(iterator)
        return args.batch * args.steps / (time.perf_counter() - started)


def _loss_config(method: str):
    """``LossConfig`` of a ``--methods`` entry: a loss name, optionally ``:<lcron_impl>``."""
    from models.config import LossConfig

    name, _, impl = method.partition(":")
    return LossConfig(method=name, **({"lcron_impl": impl} if impl else {}))


def _model_and_data(
    method: str, metrics_every: int, args: argparse.Namespace, sizes: dict[str, int]
):
    import tensorflow as tf

    from models.cascade_model import CascadeModel
    from models.config import ModelConfig

    tf.keras.utils.set_random_seed(0)
    batches = [
        synthetic_batch(sizes, args.batch, args.list_size, seed) for seed in range(args.batches)
    ]
    stacked = {k: tf.constant([b[k] for b in batches]) for k in batches[0]}
    data = tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2)
    model = CascadeModel(
        sizes,
        args.list_size,
        model_config=ModelConfig(),
        loss_config=_loss_config(method),
        train_metrics_every=metrics_every,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.005), jit_compile=args.jit_compile)
    return model, data


def _throughputs(
    configs: list[tuple[str, int]], args: argparse.Namespace, sizes: dict[str, int]
) -> dict[tuple[str, int], dict]:
    """Every (method, metrics_every): one model, warmed up, then ``--repeats`` rounds in which
    each model runs ``--steps`` steps in turn (so load changes hit every model alike)."""
    models = {}
    for config in configs:
        model, data = _model_and_data(*config, args, sizes)
        model.fit(data, epochs=1, steps_per_epoch=args.warmup, verbose=0)  # trace + warm up
        models[config] = (model, data)
    runs: dict = {config: [] for config in configs}
    cpu: dict = {config: [] for config in configs}
    losses: dict = {}
    for _ in range(args.repeats):
        for config, (model, data) in models.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            history = model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0).history
            seconds = time.perf_counter() - started
            runs[config].append(args.batch * args.steps / seconds)
            cpu[config].append((time.process_time() - cpu_started) / args.steps)
            losses[config] = history["loss"][-1]
    results = {}
    for config, (model, data) in models.items():
        # Two traces for the whole run (the first call creates the optimizer's variables).
        traces = model.train_function.experimental_get_tracing_count()
        if args.profile:
            name = f"{config[0].replace(':', '_')}_metrics_every_{config[1]}"
            _profile(model, data, args, Path(args.profile) / name)
        results[config] = {
            "method": config[0],
            "train_metrics_every": config[1],
            "requests_per_second": statistics.median(runs[config]),
            "runs": runs[config],
            "ms_per_step": 1e3 * args.batch / statistics.median(runs[config]),
            "cpu_ms_per_step": 1e3 * statistics.median(cpu[config]),
            "final_loss": losses[config],
            "train_function_traces": traces,
        }
    return results


# Where the ops of a training step come from, by TensorFlow name scope (first match wins;
# Keras numbers a process's second model "cascade_model_1").
_GROUPS = (
    ("model backward", r"gradient_tape/cascade_model(_\d+)?/"),
    ("loss backward", r"gradient_tape/|lcron_blocked_grad"),
    ("optimizer", r"(Adam|SGD)/"),
    ("model forward", r"cascade_model(_\d+)?/"),
    ("loss forward", r"\w+_loss(_\d+)?/"),
    ("input pipeline", r"Iterator"),
)
_OP_EVENT = re.compile(r"^[\w./\-]+:\w+$")  # "<op name>:<op type>"; runtime events differ


def _group(op_name: str) -> str:
    for group, pattern in _GROUPS:
        if re.match(pattern, op_name):
            return group
    # Keras' train function runs the metric updates and loss-term trackers at the top level.
    return "metrics and the rest"


def _profile(model, data, args: argparse.Namespace, log_dir: Path) -> None:
    """Traces ``--profile-steps`` steps with the TensorFlow profiler (open ``log_dir`` in
    TensorBoard's profile plugin) and prints the steps' op time by group.

    Op times are summed over the executor's threads, so groups add up to more than the wall
    time of a step when ops run in parallel; the shares are what to read.
    """
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    steps = args.profile_steps
    tf.profiler.experimental.start(str(log_dir))
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(
        max(log_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime).read_bytes()
    )
    totals: dict[str, float] = {}
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            for event in line.events:
                name = names[event.metadata_id].name
                if not _OP_EVENT.match(name):  # executor / runtime wrappers, not ops
                    continue
                group = _group(name.split(":", 1)[0])
                totals[group] = totals.get(group, 0.0) + event.duration_ps / 1e9 / steps
    total = sum(totals.values()) or 1.0
    print(f"    profile ({steps} steps, {log_dir}): op time per step by group")
    for group, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"      {group:<22} {ms:8.1f} ms  {100 * ms / total:5.1f}%")


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
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["lcron:dense", "lcron", "bce"],
        help="losses; 'lcron:<impl>' picks LossConfig.lcron_impl (default 'auto')",
    )
    parser.add_argument(
        "--train-metrics-every",
        type=int,
        nargs="*",
        default=None,
        help="update the cascade metrics every n-th step; each value is a setting to measure "
        "(default: 1, as before, and TrainerConfig's default)",
    )
    parser.add_argument(
        "--jit-compile", action="store_true", help="compile the whole train step with XLA"
    )
    parser.add_argument(
        "--input-pipeline",
        action="store_true",
        help="also time models.data.input_fn alone (GZIP TFRecords of the synthetic requests)",
    )
    parser.add_argument("--profile", default=None, help="trace steps into this folder too")
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from models.config import ModelConfig, TrainerConfig

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
    every = args.train_metrics_every or sorted({1, TrainerConfig().train_metrics_every})
    configs = [(method, n) for n in every for method in args.methods]
    results = _throughputs(configs, args, sizes)
    for (method, n), row in results.items():
        runs = ", ".join(f"{r:.0f}" for r in row["runs"])
        print(
            f"  {method:<12} metrics every {n:>2} step(s): {row['requests_per_second']:6.0f} "
            f"requests/s ({row['ms_per_step']:.0f} ms/step, {row['cpu_ms_per_step']:.0f} ms "
            f"CPU/step; runs: {runs}; loss {row['final_loss']:.3f}; train function traced "
            f"{row['train_function_traces']}x)"
        )
    for n in every:
        bce = results.get(("bce", n))
        if bce is None:
            continue
        for (method, m), row in results.items():
            if m != n or method.split(":")[0] != "lcron":
                continue
            step = bce["requests_per_second"] / row["requests_per_second"]
            cpu = row["cpu_ms_per_step"] / bce["cpu_ms_per_step"]
            print(
                f"  {method} / BCE step time, metrics every {n} step(s): {step:.2f}x wall, "
                f"{cpu:.2f}x CPU"
            )
    if args.input_pipeline:
        rate = _input_pipeline(args, sizes)
        print(
            f"  input pipeline alone (models.data.input_fn, GZIP TFRecords): {rate:.0f} requests/s"
        )
    if args.json:
        print(json.dumps([{**row} for row in results.values()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
