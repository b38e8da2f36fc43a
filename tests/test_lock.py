"""The locks are exactly what uv compiles from requirements*.in (no hand edits, no drift)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins


def _compile_flags() -> list[str]:
    """The flags `make lock` uses, read from the Makefile so the two cannot disagree."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("COMPILE :="))
    return line.split(":=", 1)[1].split()


def test_direct_pins_are_in_the_lock() -> None:
    lock = _pins(ROOT / "requirements.txt")
    direct = _pins(ROOT / "requirements.in")
    assert direct, "requirements.in has no pins"
    for name, version in direct.items():
        assert lock.get(name) == version, f"{name}=={version} pinned but lock has {lock.get(name)}"


def test_stack_pins_are_the_fixed_choices() -> None:
    lock = _pins(ROOT / "requirements.txt")
    expected = {
        "tfx": "1.15.1",
        "tensorflow": "2.15.1",
        "tensorflow-recommenders": "0.7.3",
        "tensorflow-ranking": "0.5.5",
        "apache-beam": "2.59.0",
    }
    assert {k: lock.get(k) for k in expected} == expected
    assert "pytest" in lock


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "lock"),
    [
        ("requirements.in", "requirements.txt"),
        ("requirements-airflow.in", "requirements-airflow.txt"),
    ],
)
def test_lock_is_reproduced_by_uv(tmp_path: Path, source: str, lock: str) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv not found next to the interpreter: run `make venv`"
    # Compile in a copy of the sources so the header and `-r` paths read as in the repo, with the
    # committed lock as the output file, exactly as `make lock` does: uv keeps its pins where they
    # still satisfy requirements*.in. Without them the check would compare against whatever the
    # index serves today (every new release of any transitive package would fail it), not
    # against drift between requirements*.in and the lock.
    for name in ("requirements.in", "requirements-airflow.in", lock):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(
        [uv, *_compile_flags(), source, "-o", lock, "--quiet"],
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    assert (tmp_path / lock).read_text() == (
        ROOT / lock
    ).read_text(), f"{lock} differs from `uv pip compile {source}`: run `make lock` and commit"
