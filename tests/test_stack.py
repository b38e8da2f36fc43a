"""Smoke tests of the installed stack and the `lcron` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LCRON = Path(sys.executable).parent / "lcron"


def test_lcron_help_lists_every_subcommand() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [str(LCRON), "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for sub in ("simulate", "ingest", "convert-recflow", "run", "serve", "experiment", "bench"):
        assert sub in out
    # --help must not import TFX/TensorFlow (16 s+); generous bound against a regression.
    assert time.monotonic() - started < 20


def test_unknown_subcommand_fails_clearly() -> None:
    proc = subprocess.run(
        [str(LCRON), "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


@pytest.mark.slow
def test_stack_imports_in_the_venv() -> None:
    code = (
        "import tfx, tensorflow as tf, tensorflow_recommenders as tfrs, tensorflow_ranking,"
        " apache_beam as beam, tensorflow_data_validation, tensorflow_transform;"
        "from tfx import v1;"
        "print(tfx.__version__, tf.__version__, tfrs.__version__, beam.__version__)"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1.15.1", "2.15.1", "v0.7.3", "2.59.0"]


def test_pip_is_seeded_for_the_trainer() -> None:
    # TFX's Trainer runs `python -m pip install` on the packaged user module.
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
