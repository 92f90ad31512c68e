"""The projection-einsum fast path equals tf.einsum in values and gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tfsft.models import fast_matmul
from tfsft.models.fast_matmul import _projection_split, projection_matmul


@pytest.mark.parametrize("subscripts, k", [
    ("abc,cde->abde", 1), ("abc,cd->abd", 1), ("abcd,cde->abe", 2), ("ab,bc->ac", 1),
    ("abcd,acbe->adbe", None), ("abc,dce->abde", None), ("abc,cd->adb", None), ("ab,ab->a", None),
])
def test_recognises_only_trailing_by_leading_contractions(subscripts, k):
    assert _projection_split(subscripts) == k


@pytest.mark.parametrize("subscripts, x_shape, w_shape", [
    ("abc,cde->abde", (3, 5, 8), (8, 2, 4)),
    ("abcd,cde->abe", (3, 5, 2, 4), (2, 4, 6)),
    ("abc,cd->abd", (3, 5, 8), (8, 7)),
])
def test_values_and_gradients_match_einsum(subscripts, x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=x_shape), tf.float32)
    w = tf.Variable(rng.normal(size=w_shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = projection_matmul(x, w, _projection_split(subscripts))
        reference = tf.einsum(subscripts, x, w)
        loss_ours, loss_ref = tf.reduce_sum(ours ** 2), tf.reduce_sum(reference ** 2)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    for a, b in zip(tape.gradient(loss_ours, [x, w]), tape.gradient(loss_ref, [x, w])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def _keras_einsum():
    from keras.src.backend.tensorflow import numpy as tf_numpy

    return tf_numpy.einsum


def test_scoped_fast_path_is_taken_inside_and_keras_restored_outside(monkeypatch):
    """Fails with a clear message when the Keras internal the fast path hooks into changes."""
    import keras

    calls = []
    real = fast_matmul.projection_matmul
    monkeypatch.setattr(fast_matmul, "projection_matmul", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 5, 16)).astype("float32")
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)
    original = _keras_einsum()
    before = layer(q, q).numpy()
    assert not calls
    with fast_matmul.fast_projections():
        with fast_matmul.fast_projections():  # nesting is a no-op
            inside = layer(q, q).numpy()
    assert calls, ("keras.layers.MultiHeadAttention no longer reaches keras.src.backend.tensorflow.numpy.einsum: "
                   "the Keras internal tfsft/models/fast_matmul.py relies on changed")
    assert _keras_einsum() is original, "Keras' einsum was not restored on exit"
    np.testing.assert_allclose(inside, before, atol=1e-5)
    calls.clear()
    layer(q, q)
    assert not calls


def test_keras_is_restored_when_the_block_raises():
    original = _keras_einsum()
    with pytest.raises(ValueError), fast_matmul.fast_projections():
        raise ValueError("boom")
    assert _keras_einsum() is original


def test_importing_tfsft_leaves_keras_untouched():
    import tfsft.training  # noqa: F401

    assert not hasattr(_keras_einsum(), "tfsft_original")
