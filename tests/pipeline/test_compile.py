"""``lcron compile --target vertex``: the same create_pipeline as a Vertex AI PipelineJob."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pipeline import compile_command
from pipeline.graph import task_graph

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "europe-west4-docker.pkg.dev/acme-ml/pipelines/lcron:4f1c2e9"
# An absolute path that is not part of a URI (gs://b/x) nor of a relative glob (day_00/*).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.\-])/[\w.@\-]+(?:/[\w.@\-*]*)*")


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def local_paths(spec: dict) -> set[str]:
    return {m.group() for s in _strings(spec) for m in _ABSOLUTE_PATH.finditer(s)}


def test_local_path_detector() -> None:
    spec = {"a": ["gs://bucket/x/y", "day_00/*,day_01/*", {"p": '{"uri": "/home/me/out"}'}]}
    assert local_paths(spec) == {"/home/me/out"}


def test_local_paths_are_refused_by_name(capsys) -> None:
    from pipeline.cli import main

    code = main(["compile", "--target", "vertex", "--out", "p.json", "--data", "gs://b/logs"])
    assert code == 2
    err = capsys.readouterr().err
    assert "output_dir='outputs'" in err and "data.input_base" not in err


def test_dockerfile_holds_the_schema_where_the_definition_says() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)
    assert re.search(r"^COPY data \./data$", dockerfile, re.M)
    assert f"{workdir}/data/schema.pbtxt" == compile_command.IMAGE_SCHEMA_PATH
    assert (ROOT / "data" / "schema.pbtxt").exists()


@pytest.mark.slow  # imports TFX and compiles the whole pipeline
def test_compile_for_vertex(tmp_path: Path, monkeypatch) -> None:
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may depend on (or leak) the working directory
    out = tmp_path / "build" / "pipeline.json"
    code = main(
        [
            "compile",
            "--target",
            "vertex",
            "--out",
            str(out),
            "--image",
            IMAGE,
            "--data",
            "gs://acme-logs/recflow",
            "--set",
            "output_dir=gs://acme-ml/lcron",
            "--set",
            "training.warm_start=true",
        ]
    )
    assert code == 0
    spec = json.loads(out.read_text())
    pipeline_spec = spec["pipelineSpec"]
    assert pipeline_spec["pipelineInfo"]["name"] == "lcron-cascade"
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-ml/lcron/pipeline_root"

    # The component graph is create_pipeline's: Kubeflow v2 splits the resolver in two
    # resolver tasks (model, blessing), named after it.
    def node(task: str) -> str:
        return task.split("-", 1)[0]

    tasks = pipeline_spec["root"]["dag"]["tasks"]
    graph: dict[str, set[str]] = {}
    for name, task in tasks.items():
        graph.setdefault(node(name), set()).update(node(t) for t in task.get("dependentTasks", []))
    expected = task_graph(warm_start=True)
    assert graph == {n: set(upstream) for n, upstream in expected.items()}

    # Every container runs our image with TFX's Kubeflow v2 entry point.
    executors = pipeline_spec["deploymentSpec"]["executors"]
    containers = {k: v["container"] for k, v in executors.items() if "container" in v}
    assert {k.removesuffix("_executor") for k in containers} == set(expected) - {
        "LatestBlessedModelResolver"
    }
    for container in containers.values():
        assert container["image"] == IMAGE
        assert container["command"][-1].endswith("kubeflow_v2_run_executor")

    # Ingestion always runs (no driver fingerprints the files on Vertex); the rest may cache.
    assert tasks["RecFlowExampleGen"]["cachingOptions"] == {"enableCache": False}
    assert tasks["Trainer"]["cachingOptions"] == {"enableCache": True}

    # No local path leaked: only the schema's path inside the image.
    text = out.read_text()
    for local in (str(ROOT), str(tmp_path), os.getcwd(), str(Path.home())):
        assert local not in text, local
    assert local_paths(spec) == {compile_command.IMAGE_SCHEMA_PATH}
    assert "gs://acme-logs/recflow" in text and "gs://acme-ml/lcron/serving" in text
