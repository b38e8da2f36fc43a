"""``lcron serve``: run the cascade service (in process, or in front of TF Serving)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serving-dir", required=True, help="push dir holding manifest.json and every stage"
    )
    parser.add_argument(
        "--backend",
        choices=("inprocess", "tfserving"),
        default="inprocess",
        help="inprocess: tf.saved_model.load every stage here (default); tfserving: call TF "
        "Serving by model name and the manifest's version",
    )
    parser.add_argument(
        "--tfserving-url",
        default=None,
        help="with --backend tfserving: http://HOST:8501 (REST) or grpc://HOST:8500 (gRPC)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--k1", type=int, default=100, help="retrieval items the next stage re-scores"
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="STAGE=K",
        help="items a middle stage keeps (repeatable; default: the manifest's keep of the stage)",
    )
    parser.add_argument("--max-k", type=int, default=None, help="largest k (default: --k1)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="manifest poll, s")
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024)
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="inprocess: most concurrent requests served by one signature call (1: no "
        "batching; default: 32, or with a ScaNN retrieval index its query_groups)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=1,
        help="inprocess: batches running at once; requests arriving meanwhile form the next "
        "batch (no added wait at low load)",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="inprocess: TensorFlow intra-op threads (default: TensorFlow's, one per core)",
    )
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=None,
        help="inprocess: TensorFlow inter-op threads (default: TensorFlow's, one per core)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="TF Serving call timeout, s")
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    # Usage errors first (on stderr), before the slow imports.
    for flag, value in (("--max-batch", args.max_batch), ("--max-inflight", args.max_inflight)):
        if value is not None and value < 1:
            print(f"lcron serve: error: {flag} must be >= 1", file=sys.stderr)
            return 2
    if args.k1 < 1 or (args.max_k is not None and not 1 <= args.max_k <= args.k1):
        print("lcron serve: error: need --k1 >= 1 and 1 <= --max-k <= --k1", file=sys.stderr)
        return 2
    try:
        stage_keep = parse_keep(args.keep)
    except ValueError as err:
        print(f"lcron serve: error: --keep: {err}", file=sys.stderr)
        return 2

    import uvicorn

    from serving.app import ServiceConfig, create_app
    from serving.backends import make_backend

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        backend = make_backend(
            args.backend,
            args.tfserving_url,
            timeout_s=args.timeout,
            max_batch=args.max_batch,
            max_inflight=args.max_inflight,
            intra_op_threads=args.intra_op_threads,
            inter_op_threads=args.inter_op_threads,
        )
    except ValueError as err:
        print(f"lcron serve: error: {err}", file=sys.stderr)
        return 2
    config = ServiceConfig(
        serving_dir=Path(args.serving_dir),
        k1=args.k1,
        stage_keep=stage_keep,
        max_k=args.max_k,
        max_body_bytes=args.max_body_bytes,
        poll_interval_s=args.poll_interval,
    )
    app = create_app(config, backend)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def parse_keep(values: list[str]) -> dict[str, int]:
    """``["prerank=30", ...]`` -> ``{"prerank": 30}``; a value must be a positive integer."""
    out: dict[str, int] = {}
    for value in values:
        stage, sep, k = value.partition("=")
        if not sep or not stage or not k.isdigit() or int(k) < 1:
            raise ValueError(f"{value!r} is not STAGE=K with K a positive integer")
        if stage in out:
            raise ValueError(f"stage {stage!r} given twice")
        out[stage] = int(k)
    return out
