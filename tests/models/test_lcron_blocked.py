"""The blocked LCRON path against today's dense form: same values, same gradients, no n x n.

The dense form (``sorting.permutation_matrix`` + sums of its rows, differentiated by
TensorFlow) is the reference: the blocked path must give the same top-k / rest row sums and the
same gradients (including the q' form of L_e2e's negative part, which needs the gradient of the
rest rows, not of 1 - p), for both sorts, with padding, for any k and any block size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import losses
from models.config import LCRON_IMPLS, LossConfig
from models.losses import lcron, lcron_blocked, sorting

OPS = [sorting.NEURAL_SORT, sorting.SOFT_SORT]
ROOT = Path(__file__).resolve().parents[2]


def _scores_and_mask(batch: int, n: int, seed: int, scale: float = 1.0):
    """Scores and a mask with padding in the middle and at the end, a short request and an
    empty one (when batch >= 4)."""
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(batch, n)) * scale).astype(np.float32)
    mask = np.ones((batch, n), np.float32)
    mask[0, [1, n // 2]] = 0
    if batch >= 2:
        mask[1, -(n // 3) :] = 0
    if batch >= 3:
        mask[2, : n - 2] = 0  # two valid items
    if batch >= 4:
        mask[3] = 0  # no valid item
    scores[mask == 0] = rng.choice([1e4, -1e4, 0.0], size=int((mask == 0).sum()))
    return scores, mask


def _dense_sums(scores, mask, k, sort_op, tau):
    perm = sorting.permutation_matrix(scores, mask, sort_op=sort_op, tau=tau)
    return tf.reduce_sum(perm[:, :k], axis=-2), tf.reduce_sum(perm[:, k:], axis=-2)


def _sums_and_gradient(fn, scores, upstream):
    """(top, rest, d(sum(top * g_top + rest * g_rest)) / d scores)."""
    variable = tf.Variable(scores)
    with tf.GradientTape() as tape:
        top, rest = fn(variable)
        objective = tf.reduce_sum(top * upstream[0]) + tf.reduce_sum(rest * upstream[1])
    return top.numpy(), rest.numpy(), tape.gradient(objective, variable).numpy()


def _assert_close(actual, expected, what, rtol=1e-5):
    """Relative to the scale of the expected values (gradients mix large and tiny entries)."""
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("sort_op", OPS)
@pytest.mark.parametrize(
    ("n", "k", "block_rows"),
    [
        (9, 3, 4),  # blocks do not divide n, one straddles k
        (9, 3, 64),  # one block
        (12, 5, 5),
        (12, 1, 12),  # a block exactly the list
        (11, 0, 3),  # no top rows
        (11, 11, 4),  # no rest rows
        (10, 15, 3),  # k beyond the list
        (13, 4, 1),  # one row per block
    ],
)
def test_blocked_sums_and_gradients_match_dense(sort_op, n, k, block_rows):
    scores, mask = _scores_and_mask(4, n, seed=n + k + block_rows)
    rng = np.random.default_rng(0)
    upstream = [rng.normal(size=(4, n)).astype(np.float32) for _ in range(2)]
    tau = 0.7
    dense = _sums_and_gradient(lambda s: _dense_sums(s, mask, k, sort_op, tau), scores, upstream)
    for fused in (False, True):
        blocked = _sums_and_gradient(
            lambda s, fused=fused: lcron_blocked.top_k_and_rest_sums(
                s, mask, k, sort_op=sort_op, tau=tau, block_rows=block_rows, fused=fused
            ),
            scores,
            upstream,
        )
        for name, a, b in zip(("top", "rest", "gradient"), blocked, dense, strict=True):
            _assert_close(a, b, f"{name} (fused={fused})")
    # Padding: probability 0 everywhere, gradient exactly 0.
    assert np.all(blocked[0][mask == 0] == 0) and np.all(blocked[1][mask == 0] == 0)
    assert np.all(blocked[2][mask == 0] == 0)
    assert np.abs(dense[2]).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("sort_op", OPS)
def test_ties_get_the_dense_forms_subgradient(sort_op):
    """Equal scores: d|x|/dx = sign(0) = 0 in the dense form; the blocked path's sorted-prefix
    counts must use strict inequalities to give the same gradient."""
    scores = np.array(
        [[0.5, 0.5, 0.5, -1.0, 2.0, 2.0, 0.0, 0.5], [1.0] * 8, [3.0, -1.0, 3.0, 3.0, 0, 0, 0, 0]],
        np.float32,
    )
    mask = np.ones_like(scores)
    mask[2, 4:] = 0
    upstream = [np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8) ** p for p in (1, 2)]
    dense = _sums_and_gradient(lambda s: _dense_sums(s, mask, 3, sort_op, 0.5), scores, upstream)
    for block_rows in (3, 64):  # sorted prefixes (several blocks) and pairwise signs (one)
        blocked = _sums_and_gradient(
            lambda s, b=block_rows: lcron_blocked.top_k_and_rest_sums(
                s, mask, 3, sort_op=sort_op, tau=0.5, block_rows=b
            ),
            scores,
            upstream,
        )
        for name, a, b in zip(("top", "rest", "gradient"), blocked, dense, strict=True):
            _assert_close(a, b, f"{name}, block_rows={block_rows}")


def test_gradient_matches_finite_differences():
    """Independent of the dense form: tf.test.compute_gradient's numerical Jacobian (float64
    differences of a float32 function, so a loose tolerance)."""
    scores, mask = _scores_and_mask(2, 7, seed=5, scale=2.0)
    scores[mask == 0] = 0.0

    def top_and_rest(s):
        top, rest = lcron_blocked.top_k_and_rest_sums(s, mask, 2, tau=1.0, block_rows=3)
        return tf.concat([top, 0.5 * rest], axis=-1)

    theoretical, numerical = tf.test.compute_gradient(top_and_rest, [tf.constant(scores)], 1e-2)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-3)


@pytest.mark.parametrize("sort_op", OPS)
@pytest.mark.parametrize("ks", [(4, 4), (6, 2), (1, 9)])
def test_lcron_terms_and_both_stages_gradients_match_dense(sort_op, ks):
    rng = np.random.default_rng(sum(ks))
    n = 14
    retrieval, mask = _scores_and_mask(4, n, seed=1, scale=3.0)
    ranking = (rng.normal(size=(4, n)) * 3).astype(np.float32)
    labels = rng.integers(0, 4, size=(4, n)).astype(np.float32) + rng.uniform(size=(4, n))
    stages = [tf.Variable(retrieval), tf.Variable(ranking)]

    def run(impl, block_rows):
        with tf.GradientTape() as tape:
            terms = losses.lcron_cascade_terms(
                stages,
                labels,
                mask,
                gt_num=3,
                ks=ks,
                sort_op=sort_op,
                tau=2.0,
                impl=impl,
                block_rows=block_rows,
            )
            # Each term on its own scale, so that every term's gradient counts.
            total = sum(float(i + 1) * t for i, t in enumerate(terms.values()))
        return {n: t.numpy() for n, t in terms.items()}, tape.gradient(total, stages)

    dense_terms, dense_grads = run(lcron.DENSE, 64)
    for block_rows in (5, 64):
        terms, grads = run(lcron.BLOCKED, block_rows)
        for name, value in dense_terms.items():
            _assert_close(terms[name], value, name)
        for stage, grad, ref in zip(("retrieval", "ranking"), grads, dense_grads, strict=True):
            assert np.abs(ref.numpy()).max() > 1e-4, stage
            _assert_close(grad.numpy(), ref.numpy(), f"d/d {stage}, block_rows={block_rows}")


@pytest.mark.parametrize(
    "impl",
    [
        "blocked",
        "auto",
        # XLA compiles forward and backward: seconds each.
        pytest.param("blocked_xla", marks=pytest.mark.slow),
        pytest.param("dense_xla", marks=pytest.mark.slow),
    ],
)
def test_every_path_of_the_keras_loss_matches_dense(impl):
    """The layer (UWL weights included) through each path, XLA ones compiled."""
    rng = np.random.default_rng(11)
    n = 20
    retrieval, mask = _scores_and_mask(3, n, seed=2, scale=20.0)
    labels = rng.normal(size=(3, n)).astype(np.float32)
    stages = [tf.Variable(retrieval), tf.Variable(rng.normal(size=(3, n)).astype(np.float32) * 20)]

    def run(lcron_impl):
        layer = losses.get(LossConfig(gt_num=4, lcron_impl=lcron_impl, lcron_block_rows=6))
        with tf.GradientTape() as tape:
            terms = layer(stages, labels, mask)
        grads = tape.gradient(terms["loss"], [*stages, *layer.trainable_weights])
        return terms, grads

    dense_terms, dense_grads = run("dense")
    terms, grads = run(impl)
    for name, value in dense_terms.items():
        _assert_close(terms[name].numpy(), value.numpy(), name)
    for grad, ref in zip(grads, dense_grads, strict=True):
        _assert_close(grad.numpy(), ref.numpy(), "gradient")


def test_unknown_list_size_at_trace_time():
    """A graph traced with [None, None] inputs loops over a dynamic number of blocks."""
    scores, mask = _scores_and_mask(3, 10, seed=3)
    rng = np.random.default_rng(1)
    upstream = [rng.normal(size=(3, 10)).astype(np.float32) for _ in range(2)]
    spec = tf.TensorSpec([None, None], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def sums(s, m):
        with tf.GradientTape() as tape:
            tape.watch(s)
            top, rest = lcron_blocked.top_k_and_rest_sums(s, m, 3, tau=0.5, block_rows=4)
            objective = tf.reduce_sum(top * upstream[0]) + tf.reduce_sum(rest * upstream[1])
        return top, rest, tape.gradient(objective, s)

    dense = _sums_and_gradient(
        lambda s: _dense_sums(s, mask, 3, sorting.NEURAL_SORT, 0.5), scores, upstream
    )
    for name, a, b in zip(("top", "rest", "gradient"), sums(scores, mask), dense, strict=True):
        _assert_close(a.numpy(), b, name)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sort_op"):
        lcron_blocked.top_k_and_rest_sums(tf.zeros([1, 3]), None, 1, sort_op="bogo")
    with pytest.raises(ValueError, match="block_rows"):
        lcron_blocked.top_k_and_rest_sums(tf.zeros([1, 3]), None, 1, block_rows=0)
    with pytest.raises(ValueError, match="lcron_impl"):
        LossConfig(lcron_impl="sparse")
    with pytest.raises(ValueError, match="lcron_block_rows"):
        LossConfig(lcron_block_rows=0)


def test_config_names_every_implementation_and_auto_picks_a_real_one():
    assert LCRON_IMPLS == lcron.IMPLS
    for size in (2, 40, 200, 1000, 5000, None):
        assert lcron.resolve_impl("auto", size) in lcron.IMPLS[1:]
    layer = losses.get(LossConfig(lcron_impl="blocked", lcron_block_rows=16))
    config = layer.get_config()
    assert (config["impl"], config["block_rows"]) == ("blocked", 16)
    assert type(layer).from_config(config).get_config() == config


# --- no [n, n] tensor ---------------------------------------------------------------------


def _graphs(graph, seen=None):
    """A graph and every function graph it calls (while bodies, conditions, ...)."""
    seen = set() if seen is None else seen
    yield graph
    for op in graph.get_operations():
        for attr in ("body", "cond", "then_branch", "else_branch", "f"):
            try:
                name = op.get_attr(attr).name
            except (ValueError, AttributeError):
                continue
            function = graph._get_function(name)
            if name not in seen and function is not None:
                seen.add(name)
                yield from _graphs(function.graph, seen)


def _largest_square(impl: str, n: int, block_rows: int) -> int:
    """Largest m such that the forward+backward graph of LCRON has a tensor with two dimensions
    >= m (static shapes: list size n, batch 2)."""
    stages = [tf.Variable(tf.zeros([2, n])) for _ in "ab"]

    @tf.function
    def step(labels, mask):
        with tf.GradientTape() as tape:
            terms = losses.lcron_cascade_terms(
                stages, labels, mask, impl=impl, block_rows=block_rows
            )
            total = tf.add_n(list(terms.values()))
        return tape.gradient(total, stages)

    spec = tf.TensorSpec([2, n], tf.float32)
    graph = step.get_concrete_function(spec, spec).graph
    largest = 0
    for g in _graphs(graph):
        for op in g.get_operations():
            for t in op.outputs:
                if t.shape.rank is None:
                    continue
                dims = sorted((d or 0 for d in t.shape.as_list()), reverse=True)
                if len(dims) >= 2:
                    largest = max(largest, dims[1])
    return largest


def test_blocked_graph_has_no_list_by_list_tensor():
    n = 2000
    assert _largest_square("dense", n, 64) == n  # the check sees the dense form's [n, n]
    assert _largest_square("blocked", n, 64) == 64  # [batch, block, n] at most


@pytest.mark.slow
def test_blocked_peak_memory_at_list_2000_stays_below_one_permutation_matrix():
    """Peak resident memory of a real forward+backward at batch 8 x list 2000, in a fresh
    process (the kernel's high-water mark, reset before each call): the blocked path's growth
    stays below the size of ONE [8, 2000, 2000] float32 matrix (122 MiB), which the dense form
    holds several of (its growth, measured after in the same process, is far above)."""
    code = textwrap.dedent(
        """
        import json, os, resource
        import numpy as np, tensorflow as tf
        from models.losses import lcron

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        def reset_peak():  # Linux >= 4.0; else the peak since start, which only adds margin
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass

        def peak():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        rng = np.random.default_rng(0)
        b, n = 8, 2000
        stages = [tf.Variable(rng.normal(size=(b, n)).astype(np.float32)) for _ in "ab"]
        labels = tf.constant(rng.normal(size=(b, n)).astype(np.float32))
        mask = np.ones((b, n), np.float32)
        mask[0, -7:] = 0
        mask = tf.constant(mask)
        growth = {}
        for impl in ("blocked", "dense"):
            @tf.function
            def step():
                with tf.GradientTape() as tape:
                    terms = lcron.lcron_cascade_terms(stages, labels, mask, impl=impl)
                    total = tf.add_n(list(terms.values()))
                return total, tape.gradient(total, stages)

            step.get_concrete_function()
            before = rss()
            reset_peak()
            total, grads = step()
            assert np.isfinite(float(total)) and all(np.isfinite(g.numpy()).all() for g in grads)
            growth[impl] = (peak() - before) / 2**20
        print(json.dumps(growth))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])
    one_matrix_mib = 8 * 2000 * 2000 * 4 / 2**20
    assert growth["blocked"] < one_matrix_mib, growth
    assert growth["dense"] > 2 * one_matrix_mib, growth
