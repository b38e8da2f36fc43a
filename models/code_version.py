"""A version of the model code, for TFX caching.

TFX caches a component run by its inputs and execution properties. A dotted ``run_fn`` or
``preprocessing_fn`` is a string that does not change when the code behind it does, so an edit
to models/ would reuse a stale Transform or Trainer result. The pipeline puts this hash into
their ``custom_config``: any change to a source file under models/ changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent


def code_version(root: Path = MODELS_DIR) -> str:
    """SHA-256 (first 16 hex digits) over the relative paths and bytes of ``root/**/*.py``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
