"""The in-process backend calls loaded signatures in their flat input order (serving.backends).

A saved and reloaded module with a keyword signature, as `tf.saved_model.load` gives it to the
service: the flat call must answer exactly what the keyword call answers, whatever order the
caller's dict has, and anything it cannot pass straight through (a missing or extra input, a
wrong dtype or rank) must go the keyword way, which reports it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.backends import _FlatCaller


@pytest.fixture(scope="module")
def signature(tmp_path_factory):
    module = tf.Module()
    module.weight = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="zeta"),
            tf.TensorSpec([None, 3], tf.float32, name="alpha"),
            tf.TensorSpec([None], tf.int64, name="mid"),
        ]
    )
    def serving_default(zeta, alpha, mid):
        # Each input used differently, so a swapped pair changes the answer.
        score = tf.matmul(alpha, module.weight)[:, 0] * tf.cast(zeta, tf.float32)
        return {"score": score - tf.cast(mid, tf.float32), "zeta": zeta}

    path = tmp_path_factory.mktemp("flat") / "model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serving_default})
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def _inputs():
    return {
        "mid": tf.constant([5, 7], tf.int64),
        "alpha": tf.constant([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]]),
        "zeta": tf.constant([2, 3], tf.int64),
    }


def test_the_flat_call_answers_as_the_keyword_call(signature):
    caller = _FlatCaller(signature)
    assert caller.flat is not None  # the loaded signature takes the fast path
    assert [name for name, _, _ in caller.specs] == ["alpha", "mid", "zeta"]
    expected = signature(**_inputs())
    for inputs in (_inputs(), dict(reversed(list(_inputs().items())))):
        got = caller(inputs)
        assert set(got) == {"score", "zeta"}
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name].numpy(), value.numpy())
    np.testing.assert_allclose(got["score"].numpy(), [3.0, 1.5 * 3 - 7])


def test_inputs_the_flat_call_cannot_take_go_the_keyword_way(signature):
    caller = _FlatCaller(signature)
    missing = _inputs()
    del missing["mid"]
    with pytest.raises(TypeError, match="mid"):
        caller(missing)
    extra = {**_inputs(), "other": tf.constant([1], tf.int64)}
    with pytest.raises(TypeError, match="other"):
        caller(extra)
    wrong_dtype = {**_inputs(), "zeta": tf.constant([2, 3], tf.int32)}
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        caller(wrong_dtype)
