"""Load test of the cascade service: open loop at fixed arrival rates (and closed loop).

Runs ``lcron serve --backend inprocess`` in its own process on a free loopback port and drives
it with ``serving.loadgen`` in another process (never threads of the service's process):

- open loop (default): requests arrive as a Poisson process (``--arrival constant`` for evenly
  spaced arrivals) at each rate of ``--rates``; a request's latency runs from its *scheduled*
  send time, so queueing counts and a slow answer cannot hold the load back (no coordinated
  omission). The sweep is repeated ``--repeats`` times (rates interleaved per repeat); figures
  are medians over the repeats. The answer: the highest rate whose median p99 is within
  ``--slo-p99-ms`` with no error in any repeat.
- closed loop (``--mode closed``, or ``both``): ``--concurrency`` workers send back to back;
  kept for comparison, it hides queueing by construction.

Per rate it prints p50/p99/p99.9 end to end (client side) and per stage (the service's
``Server-Timing``: queue wait, retrieval, ranking), the mean batch size, the service process's
CPU (cores and ms per request) and peak RSS, and the generator's own CPU per request and send
lag (how late it sent: a large lag means the generator, not the service, was saturated).

Models: a REAL trained pair. The script simulates a small log, runs the pipeline's
RecFlowExampleGen -> ImportSchemaGen -> Transform (``pipeline.ingest_and_transform``), trains the
cascade briefly with ``models.trainer``, then re-exports the trained stages with
``models.exporter.export_stages`` over an item corpus extended to ``--items`` (the trained items
plus synthetic ones: new ids, with author/category/type/upload time/duration drawn from trained
items) and the retrieval index of ``--index`` (brute force, ScaNN, or auto by corpus size; the
export measures the index's recall@K against brute force on eval-day queries), and pushes the
pair with the pipeline's ``push_pair`` (recall floor, fresh-process validation, warmup). The
load replays the log's eval-day requests. ``--work-dir DIR`` keeps the prepared pair and reuses
it when the same options are asked again of the same code (models/, components/);
``--serving-dir`` serves an existing push instead (with synthetic users). A variant's flags may
name another push (``--variant old=--serving-dir DIR``): both pairs get the same load.

    lcron bench serve                                   # 100k items, brute force, sweep
    lcron bench serve -- --items 1000000 --index scann --rates 100 200 300
    lcron bench serve -- --mode closed --concurrency 1 8 32

The service and the generator share the machine: on a small machine the generator's CPU (printed)
lowers the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving import loadgen  # noqa: E402 (after the path set-up, for `python benchmarks/...`)

TOP_K = 100  # retrieval's K of the exported pair (the service's K1)
QUERY_SCALARS = ("request_timestamp", "user_id", "device_id", "age", "gender", "province")
SEQUENCES = ("seq_video_id", "seq_author_id", "seq_category_level_two")
STAGES = ("queue", "retrieval", "ranking", "total")


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


def _index_config(args: argparse.Namespace):
    from models.config import IndexConfig

    values = {"kind": args.index}
    if args.scann_leaves_to_search:
        values["num_leaves_to_search"] = args.scann_leaves_to_search
    if args.scann_reorder:
        values["num_reordering_candidates"] = args.scann_reorder
    if args.scann_target_recall:
        values["target_recall"] = args.scann_target_recall
    values["scoring"] = args.scann_scoring
    if args.scann_query_groups:
        values["query_groups"] = args.scann_query_groups
    return IndexConfig(**values)


def _prepare_key(args: argparse.Namespace) -> str:
    fields = ("items", "index", "scann_leaves_to_search", "scann_reorder", "train_steps")
    fields += ("scann_scoring", "scann_target_recall")
    fields += ("scann_query_groups", "log_days", "log_requests", "seed", "min_index_recall")
    key = {f: getattr(args, f) for f in fields}
    # The code that trains, exports and pushes is part of the key: a pair prepared by older
    # code is not reused for newer code.
    code = hashlib.sha256()
    for path in sorted([*ROOT.glob("models/**/*.py"), *ROOT.glob("components/**/*.py")]):
        code.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    key["code"] = code.hexdigest()
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _train_and_push(args: argparse.Namespace, work: Path) -> tuple[Path, dict, list[dict]]:
    """Simulated log -> ingestion + Transform -> short training -> export over ``--items``
    items with the ``--index`` index -> push. Returns (serving dir, description, users)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components.cascade_pusher import pair_push, warmup
    from models import data, exporter, trainer
    from pipeline.ingest_and_transform import ingest_and_transform
    from simulator import SimulatorConfig, simulate

    started = time.perf_counter()
    simulate(
        SimulatorConfig(),
        work / "logs",
        days=args.log_days,
        requests_per_day=args.log_requests,
        seed=args.seed,
    )
    days = list(range(args.log_days))
    artifacts = ingest_and_transform(work / "logs", work / "ingest", days[:-1], days[-1:])
    transformed = artifacts["transformed_examples"]
    config = {
        "model": {"top_k": TOP_K},
        "trainer": {
            "train_steps": args.train_steps,
            "steps_per_epoch": min(50, args.train_steps),
            "batch_size": 64,
            "seed": args.seed,
        },
        "index": {"kind": "brute_force", "recall_queries": 0},  # re-exported below
    }
    eval_files = [f"{transformed}/Split-eval/*"]
    trained = trainer.train_and_export(
        FnArgs(
            train_files=[f"{transformed}/Split-train/*"],
            eval_files=eval_files,
            transform_output=artifacts["transform_graph"],
            serving_model_dir=str(work / "model" / "Format-Serving"),
            model_run_dir=str(work / "model" / "model_run"),
            custom_config=config,
        )
    )
    trained_s = time.perf_counter() - started
    tft_output = tft.TFTransformOutput(artifacts["transform_graph"])
    corpus = extend_corpus(trained.corpus, args.items, seed=args.seed)
    index = _index_config(args)
    queries = exporter.query_embeddings(
        trained.model.retrieval,
        data.input_fn(eval_files, tft_output, 256, shuffle=False, repeat=False),
        index.recall_queries,
    )
    export_started = time.perf_counter()
    export_dirs = exporter.export_stages(
        trained.model.retrieval,
        trained.model.ranking,
        tft_output,
        corpus,
        work / "export",
        top_k=TOP_K,
        index=index,
        recall_queries=queries,
    )
    export_s = time.perf_counter() - export_started
    raw_eval = sorted(glob.glob(f"{artifacts['examples']}/Split-eval/*"))
    requests = [
        bytes(r)
        for r in tf.data.TFRecordDataset(raw_eval, compression_type="GZIP").as_numpy_iterator()
    ]
    serving_dir = work / "serving"
    version = pair_push.push_pair(
        export_dirs,
        serving_dir,
        warmup.warmup_records(requests, limit=32),
        version=1,
        min_index_recall=args.min_index_recall,
    )
    for leftover in ("export", "model", "logs"):  # the pushed copy is what is served
        shutil.rmtree(work / leftover, ignore_errors=True)
    train_requests = args.log_requests * (args.log_days - 1)
    desc = {
        "models": (
            f"trained LCRON pair (simulated log {args.log_days} days x {args.log_requests} "
            f"requests, {train_requests} train requests, {args.train_steps} steps), pushed as "
            f"version {version}; corpus {len(corpus)} items = {len(trained.corpus)} trained + "
            f"{len(corpus) - len(trained.corpus)} synthetic, retrieval K={TOP_K}; load replays "
            f"{len(requests)} eval-day requests"
        ),
        "prepare_seconds": {"train": round(trained_s), "export": round(export_s)},
    }
    return serving_dir, desc, [_logged_user(r) for r in requests]


def _prepare_models(args: argparse.Namespace, tmp: Path) -> tuple[Path, dict, list[dict]]:
    """Returns (serving dir, description, the users the load sends)."""
    from serving import manifest

    if args.serving_dir:
        serving_dir = Path(args.serving_dir)
        version = manifest.read_manifest(serving_dir)["version"]
        rng = np.random.default_rng(0)
        users = [loadgen.synthetic_user(rng) for _ in range(512)]
        desc = {"models": f"pushed pair version {version} from {serving_dir}; synthetic users"}
        return serving_dir, desc, users
    work = Path(args.work_dir) / _prepare_key(args) if args.work_dir else tmp / "prepared"
    done = work / "prepared.json"
    if done.is_file():
        prepared = json.loads(done.read_text())
        prepared["desc"]["models"] += f" (prepared earlier in {work})"
        return work / "serving", prepared["desc"], prepared["users"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Keras prints the training epochs on stdout: keep stdout for the figures.
    with contextlib.redirect_stdout(sys.stderr):
        serving_dir, desc, users = _train_and_push(args, work)
    done.write_text(json.dumps({"desc": desc, "users": users}))
    return serving_dir, desc, users


# --- the service process and its resources ---------------------------------------------------


class Service:
    """``lcron serve`` in its own process, with its CPU time and RSS read from /proc."""

    def __init__(
        self, serving_dir: Path, serve_args: list[str], name: str = "", root: Path = ROOT
    ) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--serving-dir", str(serving_dir)]
        cmd += ["--port", str(self.port), "--log-level", "warning", *serve_args]
        self.command = " ".join(["lcron", *cmd[3:]]) + ("" if root == ROOT else f" (code: {root})")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(root)}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(cmd, env=env, cwd=root)
        self._ticks = os.sysconf("SC_CLK_TCK")

    def wait_healthy(self, timeout_s: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the service exited during startup")
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become healthy")
            time.sleep(0.5)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_load(service: Service, bodies: Path, out: Path, load: list[str]) -> dict:
    """One ``serving.loadgen`` run in its own process; adds the service's CPU and peak RSS."""
    cmd = [sys.executable, "-m", "serving.loadgen", "--url", service.url, "--bodies", str(bodies)]
    cmd += ["--out", str(out), *load]
    cpu0, t0 = service.cpu_seconds(), time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    rss = service.rss_mb()
    while proc.poll() is None:
        time.sleep(0.2)
        rss = max(rss, service.rss_mb())
    cpu, wall = service.cpu_seconds() - cpu0, time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    result.update(service_cpu_s=cpu, service_wall_s=wall, service_rss_mb=rss)
    return result


def summarize(result: dict) -> dict:
    """Percentiles and rates of one load run (ms)."""
    window = result["duration_s"] if result["mode"] == "open" else result["wall_s"]
    row = {
        "achieved": result["ok"] / max(window, 1e-9),
        "ok": result["ok"],
        "errors": sum(result["errors"].values()),
        "error_kinds": result["errors"],
        "rss_mb": result["service_rss_mb"],
        "service_cores": result["service_cpu_s"] / result["service_wall_s"],
    }
    # The service's CPU over the whole generator run (warmup included) per request sent then.
    sent_total = result["sent_total"]
    row["service_ms_per_req"] = 1e3 * result["service_cpu_s"] / max(sent_total, 1)
    row["generator_ms_per_req"] = 1e3 * result["generator_cpu_s"] / max(sent_total, 1)
    for name, values in (("e2e", result["latency_ms"]), ("lag", result["lag_ms"])):
        row[f"{name}_p50"], row[f"{name}_p99"], row[f"{name}_p999"] = loadgen.percentiles(values)
    for stage in STAGES:
        values = result["stages_ms"].get(stage, [])
        row[f"{stage}_p50"], row[f"{stage}_p99"], row[f"{stage}_p999"] = loadgen.percentiles(values)
    batches = result["stages_ms"].get("batch", [])
    row["batch_mean"] = float(np.mean(batches)) if batches else float("nan")
    return row


def median_rows(rows: list[dict]) -> dict:
    """Per-figure medians over repeats; errors are summed (any error fails the rate)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key == "errors":
            out[key] = int(sum(values))
        elif key == "error_kinds":
            kinds: dict[str, int] = {}
            for value in values:
                for kind, n in value.items():
                    kinds[kind] = kinds.get(kind, 0) + n
            out[key] = kinds
        else:
            out[key] = float(np.median(values))
    out["repeats"] = len(rows)
    return out


HEADER = (
    f"{'load':>9} {'ok/s':>6} {'err':>4} | {'e2e p50':>7} {'p99':>7} {'p99.9':>7} | "
    f"{'queue p99':>9} | {'retr p50':>8} {'p99':>6} {'p99.9':>6} | {'rank p50':>8} {'p99':>6} "
    f"{'p99.9':>6} | {'batch':>5} | {'svc cores':>9} {'ms/req':>6} {'RSS MB':>7} | "
    f"{'gen ms/req':>10} {'lag p99':>7}"
)


def format_row(label: str, r: dict) -> str:
    return (
        f"{label:>9} {r['achieved']:>6.0f} {r['errors']:>4} | {r['e2e_p50']:>7.2f} "
        f"{r['e2e_p99']:>7.2f} {r['e2e_p999']:>7.2f} | {r['queue_p99']:>9.2f} | "
        f"{r['retrieval_p50']:>8.2f} {r['retrieval_p99']:>6.2f} {r['retrieval_p999']:>6.2f} | "
        f"{r['ranking_p50']:>8.2f} {r['ranking_p99']:>6.2f} {r['ranking_p999']:>6.2f} | "
        f"{r['batch_mean']:>5.1f} | {r['service_cores']:>9.2f} {r['service_ms_per_req']:>6.2f} "
        f"{r['rss_mb']:>7.0f} | {r['generator_ms_per_req']:>10.3f} {r['lag_p99']:>7.2f}"
    )


def open_loop_sweep(
    args, services: list[Service], bodies: Path, tmp: Path
) -> dict[str, tuple[list[dict], dict]]:
    """Every rate, ``--repeats`` times, on every service (rates and services interleaved, so
    a change in the machine's background load hits all alike); returns, per service, (rows,
    verdict)."""
    runs = {s.name: {rate: [] for rate in args.rates} for s in services}
    stopped: set[str] = set()
    for repeat in range(args.repeats):
        stopped.clear()
        for rate in args.rates:
            for service in services:
                if service.name in stopped:
                    continue
                out = tmp / f"open_{service.name}_{rate}_{repeat}.json"
                load = ["--rate", str(rate), "--arrival", args.arrival, "--duration"]
                load += [str(args.duration), "--warmup", str(args.warmup), "--seed", str(repeat)]
                load += ["--expect-items", str(args.k), "--timeout", str(args.timeout)]
                row = summarize(run_load(service, bodies, out, load))
                runs[service.name][rate].append(row)
                label = f"{service.name} {rate:g}/s #{repeat + 1}".strip()
                print(format_row(label, row), file=sys.stderr, flush=True)
                _drain(service)
                overloaded = row["errors"] > 0.01 * max(row["ok"], 1) or row["e2e_p99"] > 10 * (
                    args.slo_p99_ms
                )
                if overloaded:  # higher rates only queue more: skip them in this repeat
                    stopped.add(service.name)
    out = {}
    for service in services:
        by_rate = runs[service.name]
        rows = [{"rate": r, **median_rows(by_rate[r])} for r in args.rates if by_rate[r]]
        passing = [
            r["rate"]
            for r in rows
            if r["repeats"] == args.repeats and r["errors"] == 0 and r["e2e_p99"] <= args.slo_p99_ms
        ]
        verdict = {
            "slo_p99_ms": args.slo_p99_ms,
            "max_rate_within_slo": max(passing) if passing else None,
            "per_repeat_p99_ms": {
                f"{rate:g}": [round(r["e2e_p99"], 2) for r in by_rate[rate]] for rate in args.rates
            },
        }
        out[service.name] = (rows, verdict)
    return out


def closed_loop(args, services: list[Service], bodies: Path, tmp: Path) -> dict[str, list]:
    runs = {s.name: {conc: [] for conc in args.concurrency} for s in services}
    for repeat in range(args.repeats):
        for conc in args.concurrency:
            for service in services:
                out = tmp / f"closed_{service.name}_{conc}_{repeat}.json"
                load = ["--concurrency", str(conc), "--duration", str(args.duration)]
                load += ["--warmup", str(args.warmup), "--expect-items", str(args.k)]
                load += ["--timeout", "30"]
                runs[service.name][conc].append(summarize(run_load(service, bodies, out, load)))
                _drain(service)
    return {
        name: [{"concurrency": c, **median_rows(rows)} for c, rows in by_conc.items()]
        for name, by_conc in runs.items()
    }


def _drain(service: Service, quiet_s: float = 1.0) -> None:
    """Waits until the service has answered what an overloaded step left queued."""
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            started = time.perf_counter()
            httpx.get(f"{service.url}/healthz", timeout=30)
            if time.perf_counter() - started < 0.05:
                break
        except httpx.TransportError:
            pass
    time.sleep(quiet_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-dir", help="serve this push instead of training a pair")
    parser.add_argument("--work-dir", help="keep the prepared pair here and reuse it")
    parser.add_argument("--items", type=int, default=100_000, help="item corpus of the export")
    parser.add_argument(
        "--index", choices=("auto", "brute_force", "scann"), default="auto", help="retrieval index"
    )
    parser.add_argument(
        "--scann-leaves-to-search", type=int, default=None, help="default: tuned at export"
    )
    parser.add_argument(
        "--scann-target-recall", type=float, default=None, help="the tuning's target (0.97)"
    )
    parser.add_argument(
        "--scann-scoring", choices=("exact", "quantized"), default="exact", help="within partitions"
    )
    parser.add_argument(
        "--scann-query-groups", type=int, default=None, help="default: IndexConfig's (4)"
    )
    parser.add_argument(
        "--scann-reorder", type=int, default=None, help="candidates re-scored exactly (ScaNN)"
    )
    parser.add_argument("--min-index-recall", type=float, default=0.95, help="push's floor")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps")
    parser.add_argument("--log-days", type=int, default=3, help="simulated days (last: eval)")
    parser.add_argument("--log-requests", type=int, default=250, help="requests per day")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("open", "closed", "both"), default="open")
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 200, 300, 400, 500, 600])
    parser.add_argument("--arrival", choices=loadgen.ARRIVALS, default="poisson")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="figures are medians over these")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds per step")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, s")
    parser.add_argument("--slo-p99-ms", type=float, default=20.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--serve-args",
        default="",
        help='extra `lcron serve` flags, e.g. "--max-batch 16 --intra-op-threads 1"',
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[@ROOT]=FLAGS",
        help="compare services in one run (repeatable): NAME, extra `lcron serve` FLAGS, and "
        "optionally ROOT, another checkout whose code serves (a before/after comparison); "
        "all variants get the same load, interleaved",
    )
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from serving import manifest as manifest_lib

    variants = [_parse_variant(v) for v in args.variant] or [("", ROOT, args.serve_args)]
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp_name:
        tmp = Path(tmp_name)
        serving_dir, desc, users = _prepare_models(args, tmp)
        manifest = manifest_lib.read_manifest(serving_dir)
        index = manifest["stages"]["retrieval"].get("index") or {"kind": "unknown"}
        bodies = tmp / "bodies.json"
        bodies.write_text(json.dumps([{"user": u, "k": args.k} for u in users]))
        services = []
        try:
            for name, root, flags in variants:
                services.append(Service(serving_dir, flags.split(), name=name, root=root))
            for service in services:
                service.wait_healthy()
            print(f"models: {desc['models']}")
            recall = index.get("recall_at_k")
            print(
                f"index: {index['kind']} over {index.get('items')} items, K={index.get('k')}, "
                f"params {index.get('params')}, built in {index.get('build_seconds')} s, "
                "recall@K vs brute force "
                + (f"{recall:.4f} on {index.get('recall_queries')} eval queries" if recall else "-")
            )
            for service in services:
                # Warm the service (TF's first calls, connections) before measuring.
                warm = ["--concurrency", "4", "--duration", "3"]
                run_load(service, bodies, tmp / "warm.json", warm)
                print(
                    f"service {service.name or ''}: {service.command}; RSS after warmup "
                    f"{service.rss_mb():.0f} MB"
                )
            print(f"machine: {os.cpu_count()} CPUs shared by the service(s) and the generator")
            results: dict = {"models": desc, "index": index, "services": {}}
            for service in services:
                results["services"][service.name] = {"command": service.command}
            if args.mode in ("open", "both"):
                print(
                    f"\nopen loop: {args.arrival} arrivals, k={args.k}, K1={TOP_K}, "
                    f"{args.duration:g}s per step after {args.warmup:g}s warmup, medians of "
                    f"{args.repeats}; latency from the scheduled send time (ms)"
                )
                sweeps = open_loop_sweep(args, services, bodies, tmp)
                for name, (rows, verdict) in sweeps.items():
                    print(f"\n{name or 'service'}" if name else "")
                    print(HEADER)
                    for row in rows:
                        print(format_row(f"{row['rate']:g}/s", row))
                    best = verdict["max_rate_within_slo"]
                    print(
                        f"highest rate with p99 <= {args.slo_p99_ms:g} ms and 0 errors: "
                        + (f"{best:g} req/s" if best else "none of the rates run")
                    )
                    print(f"p99 per repeat: {verdict['per_repeat_p99_ms']}")
                    results["services"][name].update(open_loop=rows, verdict=verdict)
            if args.mode in ("closed", "both"):
                print(f"\nclosed loop: k={args.k}, medians of {args.repeats} (ms)")
                for name, rows in closed_loop(args, services, bodies, tmp).items():
                    print(f"\n{name or 'service'}" if name else "")
                    print(HEADER)
                    for row in rows:
                        print(format_row(f"conc {row['concurrency']}", row))
                    results["services"][name]["closed_loop"] = rows
            print(
                "\ne2e: client side, from the scheduled send (open loop) or the send (closed "
                "loop); queue/retr/rank: the service's Server-Timing (queue: waiting for a "
                "batch; retr/rank: the stage calls of the request's batch); batch: mean "
                "requests per batch; svc: the service process (CPU cores used, CPU ms per "
                "request, peak RSS); gen: the load generator process; lag: how late it sent."
            )
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(results, indent=2))
        finally:
            for service in services:
                service.stop()
    return 0


def _parse_variant(text: str) -> tuple[str, Path, str]:
    """``NAME[@ROOT]=FLAGS`` -> (name, code root, flags)."""
    head, sep, flags = text.partition("=")
    if not sep or not head:
        raise SystemExit(f"--variant {text!r}: expected NAME[@ROOT]=FLAGS")
    name, _, root = head.partition("@")
    return name, Path(root).resolve() if root else ROOT, flags


if __name__ == "__main__":
    sys.exit(main())
