"""The default world makes the paper's premise hold: a dot product cannot keep what a pair model
keeps (``simulator.difficulty``; the figures are in docs/simulator.md)."""

import pytest

from simulator import SimulatorConfig
from simulator.difficulty import premise_figures

pytestmark = pytest.mark.slow  # two small SVDs: ~8 s each


def test_default_world_needs_a_pair_model_at_both_cuts():
    figures = premise_figures(SimulatorConfig(), requests=300, warmup_requests=1000)
    pair, dot = figures["pair"], figures["two_tower"]
    assert pair["recall_at_10_at_30"] > 0.99 and pair["recall_at_10_at_20"] > 0.99
    assert dot["recall_at_10_at_30"] < 0.98 and dot["recall_at_10_at_20"] < 0.9
    blind = figures["two_tower_without_sequence"]
    assert blind["recall_at_10_at_30"] < dot["recall_at_10_at_30"]


def test_without_loyalty_the_first_cut_is_nearly_free():
    """The old world (what docs/simulator.md explains): any dot product keeps the ground truth."""
    old = SimulatorConfig(
        loyalty_weight=0.0,
        taste_weight=1.0,
        category_weight=0.8,
        author_weight=0.5,
        popularity_weight=0.5,
        feedback_reference=4.0,
    )
    figures = premise_figures(old, requests=300, warmup_requests=1000)
    assert figures["two_tower"]["recall_at_10_at_30"] > 0.99
