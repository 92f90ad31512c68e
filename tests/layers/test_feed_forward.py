"""Tests for PositionwiseFeedForward."""

import keras
import numpy as np
import pytest
from scipy.special import erf

from tfsft.layers import PositionwiseFeedForward


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward_matches_formula(activation):
    """FFN(x) = act(x W₁ + b₁) W₂ + b₂, act = max(0, ·) in the paper."""
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layer = PositionwiseFeedForward(intermediate_dim=32, activation=activation,
                                    bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(layer(x))
    w1, b1 = layer.intermediate_dense.get_weights()
    w2, b2 = layer.output_dense.get_weights()
    h = x @ w1 + b1
    h = np.maximum(0.0, h) if activation == "relu" else 0.5 * h * (1 + erf(h / np.sqrt(2)))
    assert out.shape == (2, 5, 8) and w1.shape == (8, 32) and w2.shape == (32, 8)
    np.testing.assert_allclose(out, h @ w2 + b2, atol=1e-5)


def test_feed_forward_is_position_wise():
    """Each position is transformed independently of the others."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 8)).astype("float32")
    layer = PositionwiseFeedForward(16, output_dim=4)
    out = keras.ops.convert_to_numpy(layer(x))
    x2 = x.copy()
    x2[0, 3:] = rng.normal(size=(3, 8))
    out2 = keras.ops.convert_to_numpy(layer(x2))
    assert out.shape == (1, 6, 4)
    np.testing.assert_allclose(out[0, :3], out2[0, :3], atol=1e-6)
    assert not np.allclose(out[0, 3:], out2[0, 3:])


def test_feed_forward_inner_dropout_only_in_training():
    x = np.ones((4, 8, 8), "float32")
    layer = PositionwiseFeedForward(64, dropout=0.5, bias_initializer="ones")
    a = keras.ops.convert_to_numpy(layer(x, training=True))
    b = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x)), keras.ops.convert_to_numpy(layer(x))
    )


def test_feed_forward_rejects_bad_intermediate_dim():
    with pytest.raises(ValueError, match="Received: intermediate_dim=0"):
        PositionwiseFeedForward(0)
