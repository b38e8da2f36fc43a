"""Simulated cascade logs in RecFlow's schema, from a known ground truth (see docs/simulator.md).

``simulate(config, out_dir, days=..., requests_per_day=..., seed=...)`` writes one file per day
and a manifest (``simulate_once`` reuses an identical earlier log); ``SimulatorConfig`` holds
every knob of the world, the cascade and the feedback.
"""

from simulator.config import SimulatorConfig
from simulator.simulate import simulate, simulate_once

__all__ = ["SimulatorConfig", "simulate", "simulate_once"]
