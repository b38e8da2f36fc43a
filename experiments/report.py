"""Aggregates finished cells into results.json, Markdown tables and PNG plots.

Per variant and seed, a metric is first averaged over the evaluation days; the table then gives
the mean and the standard deviation (ddof=1) of those per-seed values across seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import ExperimentConfig
from models.config import DEFAULT_STAGES, MetricConfig, ModelConfig, StageConfig

# The cells' metrics are the Keras metrics of ``models.metrics.from_config`` with the default
# MetricConfig (gt 10, NDCG@10) over the experiment's stages (``model.stages``).
GT, NDCG_K = MetricConfig().gt_num, MetricConfig().ndcg_k


def stage_columns(stages: tuple[StageConfig, ...] = DEFAULT_STAGES) -> dict[str, str]:
    """Metric key -> column title: end-to-end Recall@gt@k1@...@kN first, then each stage's
    recall, then each stage's NDCG."""
    keeps = [s.keep for s in stages]
    headline = "recall_at_" + "_at_".join(str(v) for v in (GT, *keeps))
    columns = {headline: f"Recall@{GT}@{'@'.join(map(str, keeps))} (end to end)"}
    for stage in stages:
        title = stage.name.replace("_", " ").capitalize()
        key = f"{stage.name}_recall_at_{GT}_at_{stage.keep}"
        columns[key] = f"{title} Recall@{GT}@{stage.keep}"
    for stage in stages:
        title = stage.name.replace("_", " ").capitalize()
        columns[f"{stage.name}_ndcg_at_{NDCG_K}"] = f"{title} NDCG@{NDCG_K}"
    return columns


def columns(config: ExperimentConfig) -> dict[str, str]:
    """The report's columns for the experiment's cascade (``model.stages``)."""
    return stage_columns(ModelConfig.from_dict(config.model).stages)


def headline(config: ExperimentConfig) -> str:
    """The end-to-end recall's metric key, e.g. ``recall_at_10_at_40_at_30_at_20``."""
    return next(iter(columns(config)))


# The default (two-stage) cascade's.
COLUMNS: dict[str, str] = stage_columns()
HEADLINE = next(iter(COLUMNS))

# Replay figures (``experiments.replay``), present when the experiment replays its cells.
REPLAY_COLUMNS: dict[str, str] = {
    "replay_served_recall": "Replay Recall@10 (served)",
    "replay_served_ndcg": "Replay NDCG@10 (served)",
    "replay_served_retrieval_recall": "Replay retrieval: true best 10 in its top 100",
}
# Reference policies of the replay: the same for every variant of a day.
REPLAY_REFERENCES: dict[str, str] = {
    "production": "production cascade (logged)",
    "random": "random (exported corpus)",
    "corpus_oracle": "true best 10 of the exported corpus (ceiling)",
}


def _load_cells(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


def summarize(config: ExperimentConfig, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """{variant: {metric: {"mean", "std", "per_seed"}, "per_day": {day: mean}}}."""
    summary: dict[str, Any] = {}
    cols = columns(config)
    main = next(iter(cols))
    for variant in config.variants:
        mine = [c for c in cells if c["variant"] == variant.name]
        if not mine:
            continue
        entry: dict[str, Any] = {"cells": len(mine)}
        replayed = [m for m in _replay_metrics(mine) if all(m in c for c in mine)]
        for metric in [*cols, *replayed]:
            per_seed = [
                float(np.mean([c[metric] for c in mine if c["seed"] == seed]))
                for seed in config.seeds
                if any(c["seed"] == seed for c in mine)
            ]
            std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
            entry[metric] = {"mean": float(np.mean(per_seed)), "std": std, "per_seed": per_seed}
        entry["per_day"] = {
            str(day): float(np.mean([c[main] for c in mine if c["day"] == day]))
            for day in config.eval_days
            if any(c["day"] == day for c in mine)
        }
        entry["per_day_std"] = {
            str(day): _std([c[main] for c in mine if c["day"] == day])
            for day in config.eval_days
            if any(c["day"] == day for c in mine)
        }
        entry["seeds"] = sorted({c["seed"] for c in mine})
        seconds = [c["seconds"] for c in mine if "seconds" in c]
        entry["seconds_per_cell"] = float(np.mean(seconds)) if seconds else None
        entry["seconds_total"] = float(np.sum(seconds)) if seconds else None
        steps = [c["train_steps"] for c in mine if "train_steps" in c]
        entry["train_steps"] = int(np.mean(steps)) if steps else None
        summary[variant.name] = entry
    return summary


def _replay_metrics(cells: list[dict[str, Any]]) -> list[str]:
    names = {m for c in cells for m in c if m.startswith("replay_")}
    return sorted(names)


def replay_table(summary: dict[str, Any], cols: dict[str, str] | None = None) -> str:
    """Offline end-to-end recall beside the replay's figures, then the reference policies
    (mean over every cell's value: they do not depend on the variant). Empty without replay."""
    cols = cols or COLUMNS
    main = next(iter(cols))
    variants = [v for v in summary if all(m in summary[v] for m in REPLAY_COLUMNS)]
    if not variants:
        return ""
    names = [cols[main] + " (offline, logged lists)", *REPLAY_COLUMNS.values()]
    lines = ["| variant | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for variant in variants:
        entry = summary[variant]
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in [main, *REPLAY_COLUMNS]]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    for policy, label in REPLAY_REFERENCES.items():
        recall, ndcg = (f"replay_{policy}_recall", f"replay_{policy}_ndcg")
        means = [
            np.mean([summary[v][m]["mean"] for v in variants])
            if m in summary[variants[0]]
            else None
            for m in (recall, ndcg)
        ]
        if means[0] is None:
            continue
        lines.append(f"| {label} | | {means[0]:.4f} | {means[1]:.4f} | |")
    return "\n".join(lines)


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def markdown_table(summary: dict[str, Any], cols: dict[str, str] | None = None) -> str:
    """Per variant: each metric's mean ± std over seeds, the seeds, and training time."""
    cols = cols or COLUMNS
    main = next(iter(cols))
    header = "| variant | " + " | ".join(cols.values()) + " | seeds | s / cell |"
    lines = [header, "|" + "---|" * (len(cols) + 3)]
    best = max(summary, key=lambda v: summary[v][main]["mean"]) if summary else None
    for variant, entry in summary.items():
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in cols]
        if variant == best:
            cells[0] = f"**{cells[0]}**"
        cells.append(str(len(entry.get("seeds", [])) or entry.get("cells", "")))
        seconds = entry.get("seconds_per_cell")
        cells.append("" if seconds is None else f"{seconds:.0f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_day_table(summary: dict[str, Any], days: Any) -> str:
    """End-to-end recall per evaluation day: mean ± std over seeds."""
    days = [str(d) for d in days]
    lines = ["| variant | " + " | ".join(f"day {d}" for d in days) + " |"]
    lines.append("|" + "---|" * (len(days) + 1))
    for variant, entry in summary.items():
        cells = [
            f"{entry['per_day'][d]:.4f} ± {entry['per_day_std'][d]:.4f}"
            if d in entry["per_day"]
            else ""
            for d in days
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(config: ExperimentConfig, summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = columns(config)
    main = next(iter(cols))
    title = cols[main].removesuffix(" (end to end)")
    names = list(summary)
    means = [summary[n][main]["mean"] for n in names]
    stds = [summary[n][main]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, means, yerr=stds, capsize=4, color="tab:blue")
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(means) + max(stds) + 0.05))
    ax.set_ylabel(f"end-to-end {title}")
    ax.set_title(f"mean ± std over {len(config.seeds)} seeds, days {list(config.eval_days)}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "recall_by_method.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        days = sorted(summary[name]["per_day"], key=int)
        ax.plot(
            [int(d) for d in days], [summary[name]["per_day"][d] for d in days], "o-", label=name
        )
    ax.set_xlabel("evaluation day")
    ax.set_ylabel(f"end-to-end {title} (mean over seeds)")
    ax.set_xticks(list(config.eval_days))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_by_day.png", dpi=120)
    plt.close(fig)

    # Where the ground truth is lost: each stage's own recall next to the cascade's.
    stages = [(m, t) for m, t in cols.items() if "_recall_at_" in m and m != main]
    stages.append((main, f"end to end {title}"))
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    for i, (metric, label) in enumerate(stages):
        xs = [j + (i - (len(stages) - 1) / 2) * width for j in range(len(names))]
        ax.bar(
            xs,
            [summary[n][metric]["mean"] for n in names],
            width,
            yerr=[summary[n][metric]["std"] for n in names],
            capsize=3,
            label=label,
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30)
    lows = [summary[n][m]["mean"] for n in names for m, _ in stages]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_ylabel("recall (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_by_stage.png", dpi=120)
    plt.close(fig)


def write_report(config: ExperimentConfig, out: str | Path) -> dict[str, Any]:
    """Writes results.json, results.md and the three PNGs from the finished cells."""
    out = Path(out)
    cells = _load_cells(out)
    summary = summarize(config, cells)
    results = {"config": config.to_dict(), "summary": summary, "cells": cells}
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    data = config.data_config()
    source = (
        f"logs in {data.input_base} ({data.format}, {data.day_pattern})"
        if data.input_base
        else f"simulated log: {config.simulate_days} days x {config.simulate_requests_per_day}"
        f" requests, seed {config.simulate_seed}"
    )
    budget = {**config.trainer}
    if config.passes is not None:
        budget["passes"] = config.passes
    seconds = [c["seconds"] for c in cells if "seconds" in c]
    text = [
        "# Method comparison",
        "",
        f"Data: {source}. Seeds {list(config.seeds)}; streaming evaluation on days"
        f" {list(config.eval_days)} (each trained on the {config.train_window} days before);"
        " per seed the mean over days, then mean ± sample std over seeds. Training budget"
        f" (the same for every variant): {json.dumps(budget, sort_keys=True)}; model:"
        f" {json.dumps(config.model, sort_keys=True)}. Training wall time: {sum(seconds):.0f} s"
        f" over {len(seconds)} cells (s / cell: the mean per cell).",
        "",
        markdown_table(summary, columns(config)),
        "",
        f"End-to-end {columns(config)[headline(config)].removesuffix(' (end to end)')} per"
        " evaluation day (mean ± std over seeds):",
        "",
        per_day_table(summary, config.eval_days),
        "",
    ]
    replayed = replay_table(summary, columns(config))
    if replayed:
        text += [
            "## Replay against the simulator's truth",
            "",
            "What the served pair returns for the evaluation day's requests (retrieval over the"
            " exported corpus, ranking on its top 100, top 10), scored with the true affinity"
            " (`lcron replay`, experiments/replay.py); mean ± std over seeds.",
            "",
            replayed,
            "",
        ]
    (out / "results.md").write_text("\n".join(text))
    if summary:
        _plots(config, summary, out)
    return results
