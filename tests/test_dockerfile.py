"""The Dockerfile installs the same lock as `make venv` and pins nothing on its own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _makefile_var(name: str) -> str:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(f"{name} :="):
            return line.split(":=", 1)[1].strip()
    raise AssertionError(f"{name} not set in Makefile")


def test_base_image_is_python_310() -> None:
    base = re.search(r"^FROM\s+python:(\S+)", DOCKERFILE, re.M)
    assert base, "Dockerfile must start FROM an official python image"
    assert base.group(1).startswith("3.10"), base.group(1)


def test_installs_the_lock() -> None:
    assert "COPY requirements.txt" in DOCKERFILE
    assert re.search(r"uv pip install --system [^\n]*-r requirements\.txt", DOCKERFILE)


def test_every_inline_pin_matches_the_repo() -> None:
    lock = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==", 1)
            lock[name.strip().lower()] = version.strip()
    inline = re.findall(r"\b([A-Za-z0-9_.\-]+)==([0-9][^\s\\]*)", DOCKERFILE)
    assert inline, "expected at least the uv pin"
    for name, version in inline:
        if name.lower() == "uv":
            # uv is the installer, not part of the lock: it must match the Makefile's.
            assert version == _makefile_var("UV_VERSION")
        else:
            assert lock.get(name.lower()) == version, f"{name}=={version} is not the lock's pin"


def test_copies_every_package_it_installs() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include
    packages = [p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", DOCKERFILE, re.M), package
