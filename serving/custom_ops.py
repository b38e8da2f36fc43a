"""Custom TensorFlow ops a SavedModel may need beyond stock TensorFlow (ScaNN's).

A retrieval SavedModel exported with the ScaNN index (``models.exporter``, ``index.kind =
"scann"``) calls ops named ``Scann>...`` (``Scann>ScannSearchBatched``, ...). They live in the
``scann`` package's op library, which must be loaded into a process *before*
``tf.saved_model.load`` reads the graph; stock TensorFlow Serving binaries do not have them
(docs/serving.md says what to run instead). This module reads which custom ops a SavedModel
uses from its ``saved_model.pb`` and loads the libraries that provide them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

SAVED_MODEL_FILE = "saved_model.pb"
# Op namespace prefix -> (Python module whose import registers the ops, how to get it).
OP_LIBRARIES: dict[str, tuple[str, str]] = {
    "Scann>": ("scann.scann_ops.py.scann_ops", "pip install scann==1.3.0"),
}


class CustomOpsError(ValueError):
    """A SavedModel needs ops whose library cannot be loaded here; the message says which."""


def ops_used(model_dir: str | Path) -> set[str]:
    """Every op type in the SavedModel's graph and function library.

    Raises:
      CustomOpsError: ``saved_model.pb`` is not a SavedModel.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(model_dir) / SAVED_MODEL_FILE
    try:
        saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except DecodeError as err:
        raise CustomOpsError(f"{path}: not a SavedModel ({err})") from err
    ops: set[str] = set()
    for meta_graph in saved.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def custom_ops_used(model_dir: str | Path) -> set[str]:
    """Op types of the SavedModel that come from an op library (namespaced ``Lib>Op``)."""
    return {op for op in ops_used(model_dir) if ">" in op}


def load_for(model_dir: str | Path) -> list[str]:
    """Loads the op libraries the SavedModel at ``model_dir`` needs; returns their modules.

    Raises:
      CustomOpsError: an op has no known library, or its library is not installed.
    """
    loaded = []
    for op in sorted(custom_ops_used(model_dir)):
        prefix = op.split(">", 1)[0] + ">"
        if prefix not in OP_LIBRARIES:
            raise CustomOpsError(f"{model_dir}: op {op!r} comes from an unknown op library")
        module, hint = OP_LIBRARIES[prefix]
        if module in loaded:
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise CustomOpsError(
                f"{model_dir}: uses op {op!r}, whose library {module} is not installed "
                f"({hint}): {err}"
            ) from err
        loaded.append(module)
    return loaded
