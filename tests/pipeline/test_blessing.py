"""The blessing rule: an absolute floor, and no regression past the last blessed model."""

from __future__ import annotations

import pytest

from components.cascade_evaluator.evaluation import decide_blessing


@pytest.mark.parametrize(
    ("candidate", "baseline", "blessed", "why"),
    [
        (0.60, None, True, "no blessed baseline"),
        (0.40, None, False, "below the floor"),
        (0.60, 0.605, True, "baseline"),  # within tolerance 0.01
        (0.60, 0.62, False, "regresses"),  # 0.02 worse than the last blessed model
        (0.70, 0.62, True, "baseline"),
        (float("nan"), None, False, "not finite"),
    ],
)
def test_decision(candidate: float, baseline: float | None, blessed: bool, why: str) -> None:
    decision = decide_blessing(candidate, baseline, floor=0.5, max_regression=0.01)
    assert decision.blessed is blessed
    assert why in decision.reason


def test_floor_applies_even_when_better_than_baseline() -> None:
    assert not decide_blessing(0.45, 0.30, floor=0.5, max_regression=0.01).blessed
