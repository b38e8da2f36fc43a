"""The run report: ``<out>/report/index.html``, one static page to look at after a run.

Everything comes from the run's ML Metadata and the artifacts it points to (``pipeline.outcomes``):
the evaluation table overall and per slice, the blessing decision and the baseline it was
compared with, the training curves of every loss term and metric (read from the Trainer's
TensorBoard event files, train and eval), the ingestion counts and the top dead-letter reasons,
what each component did, and the pushed versions. Plots are PNGs embedded as base64: the page
needs no server and no other file.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.outcomes import HEADLINE, NodeOutcome, node_outcomes, read_json, training_curves

REPORT_DIR = "report"
TOP_REASONS = 10

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.blessed { color: #0a7d32; font-weight: bold; } .not-blessed { color: #b00020; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 0.5em; }
figure { margin: 0; } figcaption { font-size: 0.85em; text-align: center; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _table(header: list[str], rows: list[list[Any]], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def curve_plots(curves: dict[str, dict[str, list[float]]]) -> dict[str, str]:
    """Tag -> base64 PNG of its per-epoch curve (train and eval lines where both exist)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tags = sorted({tag for run in curves.values() for tag in run})
    plots = {}
    for tag in tags:
        figure, axis = plt.subplots(figsize=(3.6, 2.4))
        for run, label in (("train", "train"), ("validation", "eval")):
            values = curves.get(run, {}).get(tag)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axis.set_title(tag, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
        plots[tag] = _png(figure)
        plt.close(figure)
    return plots


def _evaluation_section(evaluator: NodeOutcome | None) -> str:
    metrics = read_json(evaluator.uri("evaluation") if evaluator else None, "metrics.json")
    if not metrics:
        return '<section id="evaluation"><h2>Evaluation</h2><p>No evaluation yet.</p></section>'
    candidate = metrics["candidate"]
    names = list(candidate["overall"])
    rows = [["overall", *[candidate["overall"][n] for n in names]]]
    rows += [[label, *[values[n] for n in names]] for label, values in candidate["slices"].items()]
    baseline = metrics.get("baseline")
    if baseline:
        rows.append(["baseline (overall)", *[baseline["overall"].get(n) for n in names]])
    blessed = bool(metrics["blessed"])
    verdict = (
        f'<p id="blessing" class="{"blessed" if blessed else "not-blessed"}">'
        f"{'Blessed' if blessed else 'Not blessed'}: {_e(metrics['reason'])}</p>"
    )
    baseline_model = evaluator.prop("blessing", "baseline_model") if evaluator else None
    compared = (
        f'<p id="baseline">Compared with the last blessed model <code>{_e(baseline_model)}</code>'
        f" ({_e(metrics.get('headline_metric', HEADLINE))} "
        f"{_number(baseline['overall'].get(HEADLINE))}).</p>"
        if baseline
        else '<p id="baseline">No earlier blessed model: judged against the floor only.</p>'
    )
    return (
        '<section id="evaluation"><h2>Evaluation</h2>'
        f"<p>{_number(candidate['requests'])} eval requests; slices by "
        f"{_e(', '.join(sorted({k.split('=')[0] for k in candidate['slices']})) or 'none')}.</p>"
        + _table(["slice", *names], rows, "evaluation-table")
        + verdict
        + compared
        + "</section>"
    )


def _training_section(trainer: NodeOutcome | None) -> str:
    curves = training_curves(trainer.uri("model_run") if trainer else None)
    if not curves:
        return '<section id="training"><h2>Training</h2><p>No TensorBoard logs.</p></section>'
    plots = curve_plots(curves)
    figures = "".join(
        f'<figure><img alt="{_e(tag)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{_e(tag)}</figcaption></figure>"
        for tag, png in plots.items()
    )
    last = sorted(curves.get("validation", {}).items())
    final = _table(["eval metric", "last epoch"], [[t, v[-1]] for t, v in last], "training-final")
    return (
        '<section id="training"><h2>Training curves</h2>'
        f"<p>From <code>{_e(trainer.uri('model_run'))}</code> (TensorBoard), per epoch.</p>"
        f'<div class="plots">{figures}</div>{final}</section>'
    )


def _ingestion_section(example_gen: NodeOutcome | None) -> str:
    stats = read_json(example_gen.uri("ingest_stats") if example_gen else None, "stats.json")
    if not stats:
        return '<section id="ingestion"><h2>Ingestion</h2><p>No ingestion yet.</p></section>'
    keys = [
        "rows_read",
        "rows_in_examples",
        "rows_dead_lettered",
        "rows_not_in_examples",
        "requests_written",
        "requests_without_ground_truth",
    ]
    rows = [[name, *[split.get(k, 0) for k in keys]] for name, split in stats["splits"].items()]
    rows.append(["total", *[stats.get(k, 0) for k in keys]])
    reasons = sorted(stats.get("dead_letter_reasons", {}).items(), key=lambda kv: -kv[1])
    left_out = sorted(stats.get("not_in_examples_reasons", {}).items(), key=lambda kv: -kv[1])
    return (
        '<section id="ingestion"><h2>Ingestion</h2>'
        + _table(["split", *keys], rows, "ingestion-counts")
        + "<h3>Top dead-letter reasons</h3>"
        + (
            _table(["kind:field", "rows"], reasons[:TOP_REASONS], "dead-letter-reasons")
            if reasons
            else '<p id="dead-letter-reasons">No dead letters.</p>'
        )
        + (
            "<h3>Rows left out of examples</h3>"
            + _table(["reason", "rows"], left_out[:TOP_REASONS], "not-in-examples")
            if left_out
            else ""
        )
        + "</section>"
    )


def _serving_section(config: PipelineConfig, pusher: NodeOutcome | None) -> str:
    serving = Path(config.resolved_serving_dir)
    manifest_path = serving / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    this_run = "no push yet"
    if pusher is not None:
        if pusher.prop("pushed_model", "pushed") == 1:
            this_run = f"pushed version {pusher.prop('pushed_model', 'pushed_version')}"
        else:
            this_run = f"not pushed: {pusher.prop('pushed_model', 'reason', 'unknown')}"
    # The stages of the cascade in service, in order (a manifest from before N stages has no
    # order: retrieval, ranking).
    order = (manifest or {}).get("order") or ["retrieval", "ranking"]
    versions = {
        stage: sorted(
            (int(p.name) for p in (serving / stage).glob("*") if p.name.isdigit()), reverse=True
        )
        for stage in order
    }
    rows = []
    for version in sorted({v for vs in versions.values() for v in vs}, reverse=True):
        in_service = bool(manifest) and manifest["version"] == version
        rows.append(
            [
                str(version),
                *[("yes" if version in versions[s] else "no") for s in versions],
                "yes" if in_service else "",
            ]
        )
    served = (
        f"<p>In service: version <b>{_e(manifest['version'])}</b>, "
        f"pushed {_e(manifest.get('pushed_at', ''))}, under <code>{_e(serving)}</code>.</p>"
        if manifest
        else f"<p>Nothing in service under <code>{_e(serving)}</code>.</p>"
    )
    return (
        '<section id="serving"><h2>Pushed versions</h2>'
        f'<p id="this-push">This run: {_e(this_run)}.</p>{served}'
        + _table(["version", *order, "in service"], rows, "pushed-versions")
        + "</section>"
    )


def _components_section(outcomes: dict[str, NodeOutcome]) -> str:
    rows = [[node, o.state.lower(), str(o.execution_id)] for node, o in outcomes.items()]
    return (
        '<section id="components"><h2>Components</h2>'
        + _table(["component", "state", "execution"], rows, "components-table")
        + "</section>"
    )


def render(config: PipelineConfig, summary: dict[str, Any] | None = None) -> str:
    """The report page of the newest executions recorded in ``config``'s ML Metadata."""
    from pipeline.graph import task_graph

    order = list(
        task_graph(
            warm_start=config.training.warm_start, stop_on_anomalies=config.data.stop_on_anomalies
        )
    )
    found = node_outcomes(config.metadata_path, config.pipeline_name)
    outcomes = {n: found[n] for n in order if n in found}
    outcomes.update({n: o for n, o in found.items() if n not in outcomes})
    summary = summary or {}
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    facts = [f"generated {generated}", f"output <code>{_e(config.output_dir)}</code>"]
    if summary.get("wall_time_s") is not None:
        facts.append(f"wall time {summary['wall_time_s']} s")
    if summary.get("log_file"):
        facts.append(f"log <code>{_e(summary['log_file'])}</code>")
    sections = [
        _evaluation_section(outcomes.get("CascadeEvaluator")),
        _training_section(outcomes.get("Trainer")),
        _ingestion_section(outcomes.get("RecFlowExampleGen")),
        _serving_section(config, outcomes.get("CascadePusher")),
        _components_section(outcomes),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(config.pipeline_name)} run report</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(config.pipeline_name)}: run report</h1>"
        f'<p id="facts">{" · ".join(facts)}</p>' + "".join(sections) + "</body></html>\n"
    )


def write_report(config: PipelineConfig, summary: dict[str, Any] | None = None) -> Path:
    """Writes ``<output_dir>/report/index.html`` (replacing the previous one); returns it."""
    path = Path(config.output_dir) / REPORT_DIR / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(config, summary), encoding="utf-8")
    tmp.replace(path)
    return path
