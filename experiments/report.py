"""Aggregates finished cells into results.json, a Markdown table and PNG plots.

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
    for variant in config.variants:
        mine = [c for c in cells if c["variant"] == variant.name]
        if not mine:
            continue
        entry: dict[str, Any] = {"cells": len(mine)}
        replayed = [m for m in _replay_metrics(mine) if all(m in c for c in mine)]
        for metric in [*COLUMNS, *replayed]:
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
        summary[variant.name] = entry
    return summary


def _replay_metrics(cells: list[dict[str, Any]]) -> list[str]:
    names = {m for c in cells for m in c if m.startswith("replay_")}
    return sorted(names)


def replay_table(summary: dict[str, Any]) -> str:
    """Offline end-to-end recall beside the replay's figures, then the reference policies
    (mean over every cell's value: they do not depend on the variant). Empty without replay."""
    variants = [v for v in summary if all(m in summary[v] for m in REPLAY_COLUMNS)]
    if not variants:
        return ""
    names = [COLUMNS[HEADLINE] + " (offline, logged lists)", *REPLAY_COLUMNS.values()]
    lines = ["| variant | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for variant in variants:
        entry = summary[variant]
        cells = [
            f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in [HEADLINE, *REPLAY_COLUMNS]
        ]
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


def markdown_table(summary: dict[str, Any]) -> str:
    header = "| variant | " + " | ".join(COLUMNS.values()) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    best = max(summary, key=lambda v: summary[v][HEADLINE]["mean"]) if summary else None
    for variant, entry in summary.items():
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in COLUMNS]
        if variant == best:
            cells[0] = f"**{cells[0]}**"
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


def write_report(config: ExperimentConfig, out: str | Path) -> dict[str, Any]:
    """Writes results.json, results.md and the two PNGs from the finished cells."""
    out = Path(out)
    cells = _load_cells(out)
    summary = summarize(config, cells)
    results = {"config": config.to_dict(), "summary": summary, "cells": cells}
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    text = [
        "# Method comparison",
        "",
        f"Seeds {list(config.seeds)}; streaming evaluation on days {list(config.eval_days)}"
        f" (each trained on the {config.train_window} days before); mean ± std over seeds.",
        "",
        markdown_table(summary),
        "",
    ]
    replayed = replay_table(summary)
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
