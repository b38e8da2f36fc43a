"""The three-stage comparison's configuration, and one three-stage cell on the shared
transformed log (session fixture: no new ingestion, a few training steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import config, report, runner
from models.config import LOSS_METHODS

ROOT = Path(__file__).resolve().parents[2]
THREE = ROOT / "experiments" / "configs" / "three_stage.json"


def test_the_three_stage_config_loads_and_names_its_columns() -> None:
    loaded = config.load(THREE)
    assert loaded.data_config().list_size == 50
    # The paper's eight methods: each has its three-stage form.
    assert [v.name for v in loaded.variants] == list(LOSS_METHODS)
    assert report.headline(loaded) == "recall_at_10_at_40_at_30_at_20"
    assert list(report.columns(loaded))[1:4] == [
        "retrieval_recall_at_10_at_40",
        "prerank_recall_at_10_at_30",
        "ranking_recall_at_10_at_20",
    ]


def test_a_baseline_without_a_form_for_the_stage_count_is_refused_by_name() -> None:
    stages = config.load(THREE).model["stages"] + [{"name": "rerank", "kind": "din", "keep": 10}]
    with pytest.raises(ValueError, match="variant 'x'.*'rankflow' has no 4-stage form"):
        config.load(
            THREE,
            [
                'variants=[{"name": "x", "loss": {"method": "rankflow"}}]',
                f"model.stages={json.dumps(stages)}",
            ],
        )
    with pytest.raises(ValueError, match="replay serves a two-stage cascade"):
        config.load(THREE, ["replay={}"])
    with pytest.raises(ValueError, match="list size 36"):
        config.load(THREE, ["data.list_size=36"])


@pytest.mark.slow
def test_a_three_stage_cell_trains_and_reports_per_stage(transformed_log, tmp_path) -> None:
    # The shared log's lists hold 40 candidates: keeps scaled to fit (36, 24, 12).
    stages = (
        '[{"name": "retrieval", "kind": "two_tower", "keep": 36, "role": "retrieval"},'
        ' {"name": "prerank", "kind": "mlp", "keep": 24},'
        ' {"name": "ranking", "kind": "din", "keep": 12}]'
    )
    loaded = config.load(
        THREE,
        [
            "data.list_size=40",
            'data.groups=["rank_pos", "rank_neg", "coarse_neg", "prerank_neg"]',
            f"model.stages={stages}",
            "trainer.train_steps=4",
            "trainer.steps_per_epoch=4",
            "trainer.batch_size=32",
        ],
    )
    variant = next(v for v in loaded.variants if v.name == "lcron")
    metrics = runner.run_cell(loaded, variant, 0, transformed_log)
    main = report.headline(loaded)
    assert main == "recall_at_10_at_36_at_24_at_12"
    for key in report.columns(loaded):
        assert 0.0 <= metrics[key] <= 1.0, key
    # The report aggregates it under the three-stage columns.
    cell = {"variant": variant.name, "seed": 0, "day": 2, "seconds": 1.0, **metrics}
    summary = report.summarize(loaded, [cell])
    table = report.markdown_table(summary, report.columns(loaded))
    assert "Recall@10@36@24@12 (end to end)" in table and "Prerank Recall@10@24" in table
