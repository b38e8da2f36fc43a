"""Loading RecFlow's pickled dicts without letting them run code.

``pickle.load`` calls whatever callable a pickle names (``os.system``, ``subprocess.Popen``,
...): unpickling an untrusted file is running its code. ``load`` uses an unpickler whose
``find_class`` admits only what a dict of NumPy arrays needs and refuses every other global
before anything is called:

- containers and numbers built by pickle opcodes themselves (dict, list, tuple, int, float,
  str, bytes, bool, None): no global is involved;
- NumPy array and scalar reconstruction: ``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` (object dtypes refused), ``numpy.core.multiarray.scalar``,
  ``numpy.core.numeric._frombuffer`` (protocol 5), also under NumPy 2's ``numpy._core`` names;
- ``_codecs.encode`` with the latin-1 codec only and ``bytes`` / ``bytearray`` (how protocols
  2 and 5 store an array's buffer).
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing of it was called."""


def _dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing NumPy dtype {dtype!r}: object arrays are not allowed")
    return dtype


def _scalar(dtype: np.dtype, *args: Any) -> Any:
    if dtype.hasobject:
        raise UnsafePickleError("refusing a NumPy object scalar")
    return np.core.multiarray.scalar(dtype, *args)


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if encoding.lower().replace("-", "") != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = np.core.multiarray._reconstruct
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = np.core.numeric._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _dtype
_ALLOWED[("_codecs", "encode")] = _latin1
for _builtins in ("builtins", "__builtin__"):
    _ALLOWED[(_builtins, "bytes")] = bytes
    _ALLOWED[(_builtins, "bytearray")] = bytearray


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}': only dicts, lists,"
                " ints and NumPy arrays are allowed (unpickling may run code; this file is"
                " either not a RecFlow dict or has been tampered with)"
            )
        return allowed


def load(file: BinaryIO | bytes, source: str = "<pickle>") -> Any:
    """Unpickles ``file`` (a binary file object or bytes) with the allow-list above.

    Raises:
      UnsafePickleError: the pickle names any other global; nothing it names was called.
    """
    if isinstance(file, bytes | bytearray):
        file = io.BytesIO(file)
    return _RestrictedUnpickler(file, source).load()
