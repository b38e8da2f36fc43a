"""The blessing rule: an absolute floor, a lift over chance level, no regression past the last
blessed model."""

from __future__ import annotations

import numpy as np
import pytest

from components.cascade_evaluator import evaluation
from components.cascade_evaluator.evaluation import decide_blessing
from models import features
from models.config import MetricConfig, StageConfig

RULE = {"floor": 0.5, "max_regression": 0.01, "min_lift": 0.1}


@pytest.mark.parametrize(
    ("candidate", "baseline", "blessed", "why"),
    [
        (0.60, None, True, "no blessed baseline"),
        (0.40, None, False, "below the floor"),
        (0.60, 0.605, True, "baseline"),  # within tolerance 0.01
        (0.60, 0.62, False, "regresses"),  # 0.02 worse than the last blessed model
        (0.70, 0.62, True, "baseline"),
        (0.58, None, False, "chance level"),  # 0.08 above chance 0.5: not enough lift
        (float("nan"), None, False, "not finite"),
    ],
)
def test_decision(candidate: float, baseline: float | None, blessed: bool, why: str) -> None:
    decision = decide_blessing(candidate, baseline, chance=0.5, **RULE)
    assert decision.blessed is blessed
    assert why in decision.reason


def test_floor_applies_even_when_better_than_baseline() -> None:
    assert not decide_blessing(0.45, 0.30, chance=0.2, **RULE).blessed


def test_chance_level_applies_even_above_the_floor() -> None:
    # Short lists make chance level high: 20 of 25 survive keep-30-then-20 by luck alone.
    assert not decide_blessing(0.88, None, chance=0.8, **RULE).blessed
    assert decide_blessing(0.91, None, chance=0.8, **RULE).blessed


def _scored(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Eval requests of 40 candidates (a few shorter), labels as ingestion writes them."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 40), np.float32)
    mask = np.ones((n, 40), np.int64)
    mask[: n // 10, 30:] = 0  # some lists of 30
    for row in range(n):
        groups = np.concatenate([3 + (10 - np.arange(10)) / 10, [2] * 10, [1] * 10, [0] * 10])
        labels[row] = rng.permutation(groups) * mask[row]
    return {features.LABEL: labels, features.MASK: mask, "gender": rng.integers(0, 2, n)}


def test_a_constant_and_a_label_blind_model_score_chance_level_and_are_not_blessed() -> None:
    scored = _scored()
    config = MetricConfig()
    rng = np.random.default_rng(1)
    # Constant scores (a collapsed model), and scores unrelated to the labels.
    models = {
        "constant": {stage: np.full((300, 40), 0.3, np.float32) for stage in evaluation.STAGES},
        "label_blind": {
            stage: rng.normal(size=(300, 40)).astype(np.float32) for stage in evaluation.STAGES
        },
    }
    for name, stages in models.items():
        report = evaluation.report_scores({**scored, **stages}, config, ["gender"])
        chance = report["chance"][evaluation.HEADLINE]
        assert chance == pytest.approx(0.9 * 0.5 + 0.1 * 20 / 30, abs=1e-5)
        recall = report["overall"][evaluation.HEADLINE]
        tolerance = 1e-5 if name == "constant" else 0.03  # 300 requests: sd ~0.008
        assert recall == pytest.approx(chance, abs=tolerance), name
        assert not decide_blessing(recall, None, chance=chance, **RULE).blessed, name
        for slice_report in report["slices"].values():
            assert "chance_end_to_end_recall" in slice_report
    # A model that ranks by the labels is blessed.
    perfect = {stage: scored[features.LABEL] for stage in evaluation.STAGES}
    report = evaluation.report_scores({**scored, **perfect}, config)
    assert report["overall"][evaluation.HEADLINE] == pytest.approx(1.0)
    assert decide_blessing(1.0, None, chance=report["chance"][evaluation.HEADLINE], **RULE).blessed


THREE_STAGES = (
    StageConfig("retrieval", "two_tower", 40, "retrieval"),
    StageConfig("prerank", "mlp", 30, "rescore"),
    StageConfig("ranking", "din", 20, "rescore"),
)


def _scored_three_stage(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Eval requests of 50 candidates in five groups (rerank_pos .. prerank_neg), a tenth with
    40, and two padding-only rows (no valid candidate: they must count for nothing)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 50), np.float32)
    mask = np.ones((n, 50), np.int64)
    mask[: n // 10, 40:] = 0
    mask[-2:] = 0
    for row in range(n):
        groups = np.concatenate([4 + (10 - np.arange(10)) / 10, *([g] * 10 for g in (3, 2, 1, 0))])
        labels[row] = rng.permutation(groups) * mask[row]
    return {features.LABEL: labels, features.MASK: mask, "gender": rng.integers(0, 2, n)}


def test_three_stages_chance_level_per_stage_metrics_slices_and_the_gate() -> None:
    scored = _scored_three_stage()
    config = MetricConfig()
    names = [s.name for s in THREE_STAGES]
    constant = {stage: np.full((200, 50), 0.3, np.float32) for stage in names}
    report = evaluation.report_scores({**scored, **constant}, config, ["gender"], THREE_STAGES)
    # Counted requests: 198 (two padding-only rows count for nothing). Constant scores keep
    # 20 of 50 (full lists) or 20 of 40 (short ones) in expectation, whatever the list order.
    full, short = 200 - 20 - 2, 20
    expected_chance = (full * 20 / 50 + short * 20 / 40) / (full + short)
    chance = report["chance"][evaluation.HEADLINE]
    assert chance == pytest.approx(expected_chance, abs=1e-5)
    assert report["overall"][evaluation.HEADLINE] == pytest.approx(chance, abs=1e-5)
    assert not decide_blessing(chance, None, chance=chance, **RULE).blessed
    overall = report["overall"]
    for name in ("retrieval_recall_at_10_at_40", "prerank_recall_at_10_at_30"):
        assert name in overall, sorted(overall)
    assert "ranking_ndcg_at_10" in overall and "prerank_kendall_tau" in overall
    assert overall["prerank_kendall_tau"] == 0.0  # constant scores: uninformative
    assert set(report["slices"]) == {"gender=0", "gender=1"}
    # Ranking by the labels at every stage: perfect recall, blessed.
    perfect = {stage: scored[features.LABEL] for stage in names}
    report = evaluation.report_scores({**scored, **perfect}, config, stages=THREE_STAGES)
    assert report["overall"][evaluation.HEADLINE] == pytest.approx(1.0)
    assert decide_blessing(1.0, None, chance=report["chance"][evaluation.HEADLINE], **RULE).blessed
    # A perfect last stage cannot hide a broken middle stage: constant pre-ranking keeps 30 of
    # 40 (or of the 40 valid) at random, so the ground truth survives with 30/40 at most.
    broken = {**perfect, "prerank": np.zeros((200, 50), np.float32)}
    recall = evaluation.report_scores({**scored, **broken}, config, stages=THREE_STAGES)
    assert recall["overall"][evaluation.HEADLINE] == pytest.approx(30 / 40, abs=1e-5)


def test_the_evaluator_needs_every_stages_scores() -> None:
    scored = _scored_three_stage(20)
    two = {stage: scored[features.LABEL] for stage in ("retrieval", "ranking")}
    with pytest.raises(ValueError, match="prerank"):
        evaluation.report_scores({**scored, **two}, MetricConfig(), stages=THREE_STAGES)
