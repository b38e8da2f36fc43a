"""The blessing rule: an absolute floor, a lift over chance level, no regression past the last
blessed model."""

from __future__ import annotations

import numpy as np
import pytest

from components.cascade_evaluator import evaluation
from components.cascade_evaluator.evaluation import decide_blessing
from models import features
from models.config import MetricConfig

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
