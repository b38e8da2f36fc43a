"""ScaNN's ops in a SavedModel: found in the graph, loaded in a fresh process, gated at push.

Tiny SavedModels (a TFRS ScaNN layer over random vectors, and one without custom ops) stand in
for the retrieval export: the mechanisms under test do not depend on the trained cascade (the
trained ScaNN export is covered by test_scann_export.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving import custom_ops

pytestmark = pytest.mark.slow  # fresh Python processes importing TensorFlow

ROOT = Path(__file__).resolve().parents[2]


def _save(path: Path, scann: bool) -> Path:
    """A minimal SavedModel: ``serving_default`` over a TFRS top-K layer (ScaNN or exact)."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(0)
    candidates = tf.constant(rng.normal(size=(300, 4)).astype(np.float32))
    ids = tf.constant(np.arange(300, dtype=np.int64))
    if scann:
        from models.scann_index import ScannIndex

        index = ScannIndex(k=5, num_leaves=4, leaves_to_search=4)
    else:
        index = tfrs.layers.factorized_top_k.BruteForce(k=5)
    index.index(candidates, identifiers=ids)
    index(tf.zeros([1, 4]))
    module = tf.Module()
    module.index = index

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="query")])
    def serving_default(query):
        scores, found = module.index(query)
        return {"scores": scores, "video_id": found}

    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"] if scann else None)
    signatures = {"serving_default": serving_default}
    tf.saved_model.save(module, str(path), signatures=signatures, options=options)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("custom_ops")
    return {"scann": _save(root / "scann", True), "exact": _save(root / "exact", False)}


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_custom_ops_are_read_from_the_graph(models):
    used = custom_ops.custom_ops_used(models["scann"])
    assert used and all(op.startswith("Scann>") for op in used)
    assert "Scann>ScannSearchBatched" in used
    assert custom_ops.custom_ops_used(models["exact"]) == set()


def test_a_fresh_process_loads_the_scann_savedmodel_only_with_its_ops(models):
    query = "[[0.5, -1.0, 0.25, 2.0]]"
    code = (
        "import tensorflow as tf\n"
        "from serving import custom_ops\n"
        f"path = {str(models['scann'])!r}\n"
        "try:\n"
        "    tf.saved_model.load(path)\n"
        "    print('loaded without ops')\n"
        "except Exception as err:\n"
        "    print('without ops:', type(err).__name__, str(err)[:200])\n"
        "print('libraries:', custom_ops.load_for(path))\n"
        "out = tf.saved_model.load(path).signatures['serving_default']"
        f"(query=tf.constant({query}))\n"
        "print('ids:', out['video_id'].numpy().tolist())\n"
    )
    proc = _fresh_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("without ops:") and "Scann>" in line for line in lines), lines
    assert "libraries: ['scann.scann_ops.py.scann_ops']" in lines
    # The 5 ids brute force finds (every leaf searched, every item re-scored: exact).
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(300, 4)).astype(np.float32)
    want = np.argsort(-(candidates @ np.array([0.5, -1.0, 0.25, 2.0], np.float32)))[:5]
    got = json.loads(next(line for line in lines if line.startswith("ids:"))[4:])
    assert sorted(got[0]) == sorted(want.tolist())


def test_recall_floor_gates_approximate_indexes_only(models, tmp_path):
    import shutil

    from components.cascade_pusher import pair_push

    def export(kind: str, report: dict | None) -> Path:
        path = tmp_path / f"{kind}_{len(list(tmp_path.iterdir()))}"
        shutil.copytree(models[kind], path)
        if report is not None:
            (path / pair_push.INDEX_REPORT).parent.mkdir(parents=True, exist_ok=True)
            (path / pair_push.INDEX_REPORT).write_text(json.dumps(report))
        return path

    good = {"kind": "scann", "exact": False, "k": 5, "recall_at_k": 0.97, "recall_queries": 50}
    bad = {**good, "recall_at_k": 0.62}
    assert pair_push.check_index(export("scann", good), 0.95)["recall_at_k"] == 0.97
    with pytest.raises(pair_push.IndexRecallError, match=r"0\.6200 on 50 eval queries"):
        pair_push.check_index(export("scann", bad), 0.95)
    # Deleting the report does not get a ScaNN graph past the floor.
    with pytest.raises(pair_push.IndexRecallError, match="no measured recall"):
        pair_push.check_index(export("scann", None), 0.95)
    # A report claiming exactness does not either: the graph's ops decide.
    with pytest.raises(pair_push.IndexRecallError, match="0.5"):
        pair_push.check_index(export("scann", {**bad, "exact": True, "recall_at_k": 0.5}), 0.95)
    # Brute force is exact: no measured recall needed.
    assert pair_push.check_index(export("exact", None), 0.95) is None
    # No floor configured: reports pass through unchecked.
    assert pair_push.check_index(export("scann", bad), None)["recall_at_k"] == 0.62
