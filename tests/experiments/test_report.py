"""The comparison's arithmetic: per seed, the mean over evaluation days; then mean and sample
standard deviation over seeds."""

from __future__ import annotations

import pytest

from experiments.config import ExperimentConfig, Variant
from experiments.report import COLUMNS, HEADLINE, markdown_table, replay_table, summarize


def _cell(variant: str, seed: int, day: int, recall: float) -> dict:
    return {"variant": variant, "seed": seed, "day": day, **dict.fromkeys(COLUMNS, recall)}


def test_mean_over_days_then_mean_and_std_over_seeds() -> None:
    config = ExperimentConfig(
        variants=(Variant("a", {"method": "bce"}), Variant("b", {"method": "lcron"})),
        seeds=(0, 1),
        eval_days=(2, 3),
    )
    cells = [
        _cell("a", 0, 2, 0.50),
        _cell("a", 0, 3, 0.70),  # seed 0: 0.60
        _cell("a", 1, 2, 0.80),
        _cell("a", 1, 3, 0.80),  # seed 1: 0.80
        _cell("b", 0, 2, 0.90),  # b has one seed and one day so far (an interrupted run)
    ]
    summary = summarize(config, cells)
    a = summary["a"][HEADLINE]
    assert a["per_seed"] == pytest.approx([0.60, 0.80])
    assert a["mean"] == pytest.approx(0.70)
    # Sample std of (0.6, 0.8): sqrt(((-0.1)^2 + 0.1^2) / (2 - 1)) = 0.1414...
    assert a["std"] == pytest.approx(0.02**0.5)
    assert summary["a"]["per_day"] == pytest.approx({"2": 0.65, "3": 0.75})
    assert summary["b"][HEADLINE] == {"mean": 0.9, "std": 0.0, "per_seed": [0.9]}
    table = markdown_table(summary)
    assert "| a | 0.7000 ± 0.1414 |" in table
    assert "| b | **0.9000 ± 0.0000** |" in table  # the best headline is in bold


def test_replay_table_puts_offline_recall_beside_the_replay_and_the_references() -> None:
    config = ExperimentConfig(variants=(Variant("a", {"method": "lcron"}),), seeds=(0, 1))
    replayed = {
        "replay_served_recall": 0.2,
        "replay_served_ndcg": 0.5,
        "replay_served_retrieval_recall": 0.4,
        "replay_production_recall": 0.15,
        "replay_production_ndcg": 0.7,
        "replay_random_recall": 0.0,
        "replay_random_ndcg": 0.05,
    }
    cells = [
        {**_cell("a", 0, 2, 0.8), **replayed},
        {**_cell("a", 1, 2, 0.9), **replayed, "replay_served_recall": 0.4},
    ]
    summary = summarize(config, cells)
    assert summary["a"]["replay_served_recall"]["mean"] == pytest.approx(0.3)
    table = replay_table(summary)
    assert "| a | 0.8500 ± 0.0707 | 0.3000 ± 0.1414 | 0.5000 ± 0.0000 | 0.4000 ± 0.0000 |" in table
    assert "| production cascade (logged) | | 0.1500 | 0.7000 | |" in table
    assert "ceiling" not in table  # no corpus oracle recorded, no row
    # Without replay figures there is no replay table.
    assert replay_table(summarize(config, [_cell("a", 0, 2, 0.8)])) == ""
