"""``lcron compile``: the pipeline as a definition for another orchestrator.

    lcron compile --target vertex --out pipeline.json \\
        --image REGION-docker.pkg.dev/PROJECT/REPO/lcron:TAG \\
        --set output_dir=gs://BUCKET/lcron --data gs://BUCKET/recflow

``--target vertex`` builds the same ``create_pipeline`` as ``lcron run`` and compiles it with
TFX's KubeflowV2DagRunner into a PipelineJob JSON for Vertex AI Pipelines (or any Kubeflow
Pipelines v2 backend). Every component runs in the image built from our Dockerfile; ML Metadata
is the backend's own. Paths in the configuration must be remote (``gs://...``): a local path in
the definition would point nowhere inside the containers, so it is refused. See
docs/vertex.md for building the image, submitting and scheduling.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, load_config

TARGETS = ("vertex",)
# `docker build -t lcron .` (README): push it to a registry the backend can pull from and pass
# that name with --image.
DEFAULT_IMAGE = "lcron:latest"
# The Dockerfile's WORKDIR holds the package sources, data/ included: the curated schema as
# the containers see it.
IMAGE_SCHEMA_PATH = "/opt/lcron/data/schema.pbtxt"
UNCACHED_TASK = "RecFlowExampleGen"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=TARGETS, help="orchestrator")
    parser.add_argument("--out", required=True, help="file to write (pipeline.json)")
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"container image of every component, built from our Dockerfile"
        f" (default {DEFAULT_IMAGE}; use your registry's name)",
    )
    parser.add_argument("--config", help="JSON file overriding the defaults of PipelineConfig")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set output_dir=gs://BUCKET/lcron (repeatable)",
    )
    parser.add_argument("--data", help="input base: the daily logs (a gs:// folder)")
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        metavar="ARG",
        help="Beam pipeline arg, e.g. --beam-arg=--runner=DataflowRunner (repeatable)",
    )


def _is_remote(path: str) -> bool:
    return "://" in path


def check_remote_paths(config: PipelineConfig) -> None:
    """Raises ValueError naming each configured path that is not a remote URI."""
    paths = {
        "output_dir": config.output_dir,
        "data.input_base": config.data.input_base,
        "serving_dir": config.resolved_serving_dir,
    }
    local = {name: value for name, value in paths.items() if not _is_remote(value)}
    if local:
        listed = ", ".join(f"{name}={value!r}" for name, value in local.items())
        raise ValueError(
            f"the containers cannot see local paths: {listed}; use gs:// URIs"
            " (e.g. --set output_dir=gs://BUCKET/lcron --data gs://BUCKET/logs)"
        )


def build_vertex_pipeline(config: PipelineConfig) -> Any:
    """``create_pipeline`` for Vertex: remote paths, the image's schema, the backend's MLMD."""
    from pipeline.local_runner import create_from_config

    return create_from_config(
        config,
        input_base=config.data.input_base,
        train_days=config.data.train_days,
        eval_days=config.data.eval_days,
        metadata_connection_config=None,
        schema_path=IMAGE_SCHEMA_PATH,
    )


def compile_vertex(config: PipelineConfig, image: str, out: str | Path) -> dict[str, Any]:
    """Writes the Vertex AI PipelineJob JSON of ``config`` to ``out``; returns it."""
    from tfx import v1 as tfx

    check_remote_paths(config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(out.parent),
        output_filename=out.name,
    )
    runner.run(build_vertex_pipeline(config), write_out=True)
    spec = json.loads(out.read_text())
    # Locally, RecFlowExampleGen's driver fingerprints the input files so that the cache sees
    # new logs; the Kubeflow v2 backend runs no custom driver and would serve a cached
    # ingestion of changed files, so that one task always runs (its downstream tasks then see
    # a new Examples artifact and re-run).
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    tasks[UNCACHED_TASK]["cachingOptions"] = {"enableCache": False}
    out.write_text(json.dumps(spec, sort_keys=True))
    return spec


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data.input_base={args.data}")
    if args.beam_arg is not None:
        overrides.append(f"beam_pipeline_args={json.dumps(args.beam_arg)}")
    try:
        config = load_config(args.config, overrides)
        check_remote_paths(config)
    except (ValueError, OSError) as err:
        print(f"lcron compile: {err}", file=sys.stderr)
        return 2
    spec = compile_vertex(config, args.image, args.out)
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {args.out}: {len(tasks)} tasks, image {args.image}")
    return 0
