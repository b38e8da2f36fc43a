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

HEADLINE = "recall_at_10_at_30_at_20"
COLUMNS: dict[str, str] = {
    HEADLINE: "Recall@10@30@20 (end to end)",
    "retrieval_recall_at_10_at_30": "Retrieval Recall@10@30",
    "ranking_recall_at_10_at_20": "Ranking Recall@10@20",
    "retrieval_ndcg_at_10": "Retrieval NDCG@10",
    "ranking_ndcg_at_10": "Ranking NDCG@10",
}


def _load_cells(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]


def summarize(config: ExperimentConfig, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """{variant: {metric: {"mean", "std", "per_seed"}, "per_day": {day: mean}}}."""
    summary: dict[str, Any] = {}
    for variant in config.variants:
        mine = [c for c in cells if c["variant"] == variant.name]
        if not mine:
            continue
        entry: dict[str, Any] = {"cells": len(mine)}
        for metric in COLUMNS:
            per_seed = [
                float(np.mean([c[metric] for c in mine if c["seed"] == seed]))
                for seed in config.seeds
                if any(c["seed"] == seed for c in mine)
            ]
            std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
            entry[metric] = {"mean": float(np.mean(per_seed)), "std": std, "per_seed": per_seed}
        entry["per_day"] = {
            str(day): float(np.mean([c[HEADLINE] for c in mine if c["day"] == day]))
            for day in config.eval_days
            if any(c["day"] == day for c in mine)
        }
        entry["per_day_std"] = {
            str(day): _std([c[HEADLINE] for c in mine if c["day"] == day])
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


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def markdown_table(summary: dict[str, Any]) -> str:
    """Per variant: each metric's mean ± std over seeds, the seeds, and training time."""
    header = "| variant | " + " | ".join(COLUMNS.values()) + " | seeds | s / cell |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    best = max(summary, key=lambda v: summary[v][HEADLINE]["mean"]) if summary else None
    for variant, entry in summary.items():
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in COLUMNS]
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

    names = list(summary)
    means = [summary[n][HEADLINE]["mean"] for n in names]
    stds = [summary[n][HEADLINE]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, means, yerr=stds, capsize=4, color="tab:blue")
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(means) + max(stds) + 0.05))
    ax.set_ylabel("end-to-end Recall@10@30@20")
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
    ax.set_ylabel("end-to-end Recall@10@30@20 (mean over seeds)")
    ax.set_xticks(list(config.eval_days))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_by_day.png", dpi=120)
    plt.close(fig)

    # Where the ground truth is lost: each stage's own recall next to the cascade's.
    stages = (
        ("retrieval_recall_at_10_at_30", "retrieval Recall@10@30"),
        ("ranking_recall_at_10_at_20", "ranking Recall@10@20"),
        (HEADLINE, "end to end Recall@10@30@20"),
    )
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    for i, (metric, label) in enumerate(stages):
        xs = [j + (i - 1) * width for j in range(len(names))]
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
        markdown_table(summary),
        "",
        "End-to-end Recall@10@30@20 per evaluation day (mean ± std over seeds):",
        "",
        per_day_table(summary, config.eval_days),
        "",
    ]
    (out / "results.md").write_text("\n".join(text))
    if summary:
        _plots(config, summary, out)
    return results
