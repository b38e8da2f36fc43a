"""The notebook runs headless, top to bottom, on a tiny simulated log (as a user would run it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "cascade_pipeline.ipynb"


def test_notebook_executes_and_shows_the_evaluation(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    overrides = [
        "data.simulate_days=3",
        "data.simulate_requests_per_day=200",
        "training.trainer.train_steps=60",
        "evaluation.recall_floor=0.0",
        # Beam in the kernel's process: worker processes cost more than this log needs.
        'beam_pipeline_args=["--direct_running_mode=in_memory","--direct_num_workers=1"]',
    ]
    params[0].source = f"OUTPUT_DIR = {str(tmp_path)!r}\nOVERRIDES = {json.dumps(overrides)}"

    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()

    outputs = "\n".join(
        out.get("text", "") + json.dumps(out.get("data", {}))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "error" not in {out.get("output_type") for c in nb.cells for out in c.get("outputs", [])}
    assert "rows_dead_lettered" in outputs  # ingestion counts shown
    assert "end_to_end_recall" in outputs  # evaluation table shown
    assert "blessed: True" in outputs
    assert (tmp_path / "serving" / "manifest.json").exists()
