"""The whole pipeline on LocalDagRunner with SQLite ML Metadata, as `lcron run` runs it.

One module-scoped scenario over a tiny simulated log, in the order a user meets it:
1. a run is killed mid-way (SIGKILL while the Trainer runs): nothing is served;
2. the re-run completes: every component ran, eval artifacts exist, the pair is pushed with its
   manifest, models.config and warmup requests;
3. a deliberately degraded model (1 training step) is not blessed and not pushed: the serving
   dir still holds the good pair;
4. re-running the good configuration is served from TFX's cache.

Run 2 goes through the operator's console (no ``--json``): a few lines on the terminal, the rest
in ``<out>/logs/run-<timestamp>.log``, and the run report ``<out>/report/index.html``; runs 3 and
4 print only the JSON summary on stdout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

LCRON = str(Path(sys.executable).parent / "lcron")
TINY = [
    "data.simulate_days=3",
    "data.simulate_requests_per_day=300",
    "data.simulate_corrupt_fraction=0.01",
    "trainer.train_steps=150",
    "trainer.batch_size=64",
    "evaluation.recall_floor=0.3",
    "evaluation.max_regression=0.02",
]
COMPONENTS = (
    "RecFlowExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "CascadeEvaluator",
    "CascadePusher",
)


def _args(out: Path, extra: list[str] = (), json_summary: bool = True) -> list[str]:
    overrides = []
    for item in [*TINY, *extra]:
        key, value = item.split("=", 1)
        if key.startswith("trainer."):
            key = "training." + key
        overrides += ["--set", f"{key}={value}"]
    return ["run", "--out", str(out), *(["--json"] if json_summary else []), *overrides]


def _run(out: Path, extra: list[str] = (), timeout: float = 900) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [LCRON, *_args(out, extra)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout)  # stdout holds the JSON summary and nothing else


def _run_on_the_console(out: Path, timeout: float = 900) -> dict:
    """``lcron run`` as an operator runs it (no --json); returns what the terminal got."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [LCRON, *_args(out, json_summary=False)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"stdout": proc.stdout, "stderr": proc.stderr}


def _summary(out: Path) -> dict:
    """The summary ``lcron run --json`` prints, read back from the run's outputs."""
    from pipeline import local_runner
    from pipeline.config import load_config

    return local_runner.summary(load_config(None, [f"output_dir={out}"]))


def _executions(out: Path) -> dict[str, list[str]]:
    """Component id -> states of its executions, read from the run's ML Metadata."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(out / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    by_node: dict[str, list[str]] = {}
    # LocalDagRunner puts every execution in a "node" context named "<pipeline>.<node id>".
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[-1]
        for execution in store.get_executions_by_context(context.id):
            state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
            by_node.setdefault(node, []).append(state)
    return by_node


def _serving_state(serving: Path) -> dict:
    manifest = serving / "manifest.json"
    return {
        "manifest": json.loads(manifest.read_text()) if manifest.exists() else None,
        "retrieval": sorted(p.name for p in (serving / "retrieval").glob("*")),
        "ranking": sorted(p.name for p in (serving / "ranking").glob("*")),
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("lcron_run")
    serving = out / "serving"
    result: dict = {"out": out, "serving": serving}

    # 1. Kill a run while the Trainer runs.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [LCRON, *_args(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    trainer_dir = out / "pipeline_root" / "Trainer"
    while not trainer_dir.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    result["killed_before_exit"] = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    result["after_kill"] = _serving_state(serving)

    # 2. Re-run, on the console: completes.
    result["console"] = _run_on_the_console(out)
    result["good"] = _summary(out)
    result["after_good"] = _serving_state(serving)
    result["executions_good"] = _executions(out)
    result["report_good"] = (out / "report" / "index.html").read_text()

    # 3. A degraded model after the good one.
    result["degraded"] = _run(out, ["trainer.train_steps=1"])
    result["after_degraded"] = _serving_state(serving)
    result["report_degraded"] = (out / "report" / "index.html").read_text()

    # 4. The good configuration again: cached.
    started = time.monotonic()
    result["cached"] = _run(out)
    result["cached_wall_s"] = time.monotonic() - started
    result["executions_all"] = _executions(out)
    return result


def test_killed_run_serves_nothing_half_written(scenario: dict) -> None:
    assert scenario["killed_before_exit"], "the run finished before it could be killed"
    state = scenario["after_kill"]
    assert state["manifest"] is None
    assert state["retrieval"] == [] and state["ranking"] == []


def test_rerun_completes_and_pushes_the_pair(scenario: dict) -> None:
    good = scenario["good"]
    executions = scenario["executions_good"]
    for component in COMPONENTS:
        assert "COMPLETE" in executions.get(component, []) or "CACHED" in executions.get(
            component, []
        ), (component, executions.get(component))
    assert good["blessed"] is True, good["reason"]
    evaluation = good["evaluation"]
    assert evaluation["requests"] > 0
    assert 0.0 <= evaluation["overall"]["end_to_end_recall"] <= 1.0
    assert evaluation["slices"], "evaluation is sliced by a context feature"

    state = scenario["after_good"]
    version = str(state["manifest"]["version"])
    assert state["retrieval"] == [version] and state["ranking"] == [version]
    serving = scenario["serving"]
    for stage in ("retrieval", "ranking"):
        model_dir = serving / stage / version
        assert (model_dir / "saved_model.pb").exists()
        assert (model_dir / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    models_config = (serving / "models.config").read_text()
    assert "retrieval" in models_config and "ranking" in models_config
    assert version in models_config
    assert good["ingestion"]["rows_dead_lettered"] > 0


def test_degraded_model_is_not_blessed_nor_pushed(scenario: dict) -> None:
    degraded = scenario["degraded"]
    assert degraded["blessed"] is False
    assert "regress" in degraded["reason"] or "floor" in degraded["reason"]
    assert scenario["after_degraded"] == scenario["after_good"]


def test_rerun_uses_the_cache(scenario: dict) -> None:
    states = scenario["executions_all"]
    # The third run of the good configuration reuses every result of the second.
    for component in ("RecFlowExampleGen", "Transform", "Trainer"):
        assert states[component].count("CACHED") >= 1, (component, states[component])
    assert scenario["after_degraded"] == _serving_state(scenario["serving"])


# --- the operator's view of run 2 -----------------------------------------------------------


def test_console_is_short_and_the_log_file_has_the_rest(scenario: dict) -> None:
    console = scenario["console"]
    lines = (console["stdout"] + console["stderr"]).splitlines()
    assert len(lines) < 60, "\n".join(lines)
    status = console["stderr"].splitlines()
    log = Path(status[0].rsplit(" ", 1)[-1])
    assert status[0] == f"lcron run: full log in {log}"
    assert log.parent == scenario["out"] / "logs" and log.name.startswith("run-")
    assert f"full log: {log}" in console["stdout"]
    # One line as each component starts and one as it ends, with what it produced.
    for component in COMPONENTS:
        starts = [line for line in status if re.search(rf"\] {component} \.\.\.$", line)]
        ends = [line for line in status if re.search(rf"\] {component} done in ", line)]
        assert len(starts) == 1 and len(ends) == 1, (component, status)
    good = scenario["good"]
    version = good["serving_manifest"]["version"]
    ends = {
        name: next(line for line in status if f"] {name} done in " in line)
        for name in ("RecFlowExampleGen", "Trainer", "CascadeEvaluator", "CascadePusher")
    }
    assert f"{good['ingestion']['rows_read']:,} rows read" in ends["RecFlowExampleGen"]
    assert "epochs, eval end-to-end recall" in ends["Trainer"]
    assert ": blessed (" in ends["CascadeEvaluator"]
    assert f"pushed version {version}" in ends["CascadePusher"]
    assert "blessed: True" in console["stdout"]  # the summary
    # No bar redraws or Keras/absl/Beam output on the terminal (not a TTY here).
    terminal = console["stdout"] + console["stderr"]
    assert "\r" not in terminal and "Epoch 1/" not in terminal and "absl" not in terminal
    # The log file holds the rest: TFX's own records, Keras' epochs, the progress records.
    text = log.read_text()
    assert "Component Trainer is running." in text and "Running launcher for" in text
    assert "Component CascadePusher is finished." in text
    assert "lcron-progress training" in text


class _Page(HTMLParser):
    """Tables (by id: rows of cell texts), images (alt -> data URI) and texts by element id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.sections: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._ids: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "table":
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images[attrs["alt"]] = attrs["src"]
        if "id" in attrs and tag == "p":
            self._ids.append((tag, attrs["id"]))
            self.texts[attrs["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif self._ids and tag == self._ids[-1][0]:
            self._ids.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, element_id in self._ids:
            self.texts[element_id] += data


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _tensorboard_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing import event_accumulator

    tags = set()
    for split in ("train", "validation"):
        accumulator = event_accumulator.EventAccumulator(str(run_dir / split))
        accumulator.Reload()
        # Per-epoch scalars (Keras also writes the eval ones "vs_iterations": the same values).
        tags |= {t[len("epoch_") :] for t in accumulator.Tags()["tensors"] if t[:6] == "epoch_"}
    return tags


def test_report_shows_the_run(scenario: dict) -> None:
    page = _parse(scenario["report_good"])
    good = scenario["good"]
    assert page.sections == ["evaluation", "training", "ingestion", "serving", "components"]

    # Evaluation, overall and per slice, as the evaluator wrote it.
    evaluation = good["evaluation"]
    names = list(evaluation["overall"])
    header, *rows = page.tables["evaluation-table"]
    assert header == ["slice", *names]
    expected = [("overall", evaluation["overall"]), *evaluation["slices"].items()]
    assert [row[0] for row in rows] == [label for label, _ in expected]
    for row, (_, values) in zip(rows, expected, strict=True):
        assert row[1:] == [f"{values[n]:.4f}" for n in names]
    assert page.texts["blessing"] == f"Blessed: {good['reason']}"
    assert "No earlier blessed model" in page.texts["baseline"]

    # A training curve per loss term and metric in the TensorBoard logs, as PNGs.
    # The good run's Trainer execution: the one whose model was pushed (model/<id>).
    execution = Path(good["serving_manifest"]["metrics"]["source_model"]).name
    run_dir = scenario["out"] / "pipeline_root" / "Trainer" / "model_run" / execution
    tags = _tensorboard_tags(run_dir)
    assert {"loss", "l_e2e", "l_single_retrieval", "l_single_ranking"} <= tags
    assert "recall_at_10_at_30_at_20" in tags
    assert set(page.images) == tags
    for src in page.images.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

    # Ingestion counts and the top dead-letter reasons.
    ingestion = good["ingestion"]
    counts = {row[0]: row[1:] for row in page.tables["ingestion-counts"][1:]}
    keys = page.tables["ingestion-counts"][0][1:]
    assert counts["total"] == [f"{ingestion[k]:,}" for k in keys]
    assert set(counts) == {"total", *ingestion["splits"]}
    reasons = sorted(ingestion["dead_letter_reasons"].items(), key=lambda kv: -kv[1])
    shown = page.tables["dead-letter-reasons"][1:]
    assert len(shown) == min(10, len(reasons)) and shown[0] == [reasons[0][0], str(reasons[0][1])]

    # The pushed version, in service.
    version = str(good["serving_manifest"]["version"])
    assert [version, "yes", "yes", "yes"] in page.tables["pushed-versions"]
    assert page.texts["this-push"] == f"This run: pushed version {version}."


def test_report_of_the_degraded_run_names_the_baseline(scenario: dict) -> None:
    page = _parse(scenario["report_degraded"])
    assert page.texts["blessing"].startswith("Not blessed: ")
    good_model = scenario["good"]["serving_manifest"]["metrics"]["source_model"]
    assert good_model in page.texts["baseline"]
    baseline_row = page.tables["evaluation-table"][-1]
    assert baseline_row[0] == "baseline (overall)"
    good_recall = scenario["good"]["evaluation"]["overall"]["end_to_end_recall"]
    assert baseline_row[1] == f"{good_recall:.4f}"
    assert page.texts["this-push"].startswith("This run: not pushed")
    version = str(scenario["good"]["serving_manifest"]["version"])
    assert [version, "yes", "yes", "yes"] in page.tables["pushed-versions"]  # still in service


def test_a_failing_component_is_named_with_the_log_file(tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    (tmp_path / "logs" / "day_00").mkdir(parents=True)  # day 1 and 2 are missing
    proc = subprocess.run(
        [LCRON, "run", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 1
    (log,) = (tmp_path / "out" / "logs").glob("run-*.log")
    failure = [line for line in proc.stderr.splitlines() if " failed after " in line]
    assert len(failure) == 1 and "] RecFlowExampleGen failed after " in failure[0], proc.stderr
    assert "matched no data file" in failure[0]
    assert proc.stderr.splitlines()[-1] == f"full log: {log}"
    assert proc.stdout == ""
    assert "Traceback" in log.read_text()
