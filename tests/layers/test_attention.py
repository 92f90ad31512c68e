"""Tests for ScaledDotProductAttention and MultiHeadAttention."""

import keras
import numpy as np
import pytest

from tfsft.layers import MultiHeadAttention
from tfsft.layers import ScaledDotProductAttention
from tfsft.layers import compute_causal_mask
from tfsft.layers import make_attention_mask

B, T_Q, T_K, D, H, DK = 2, 5, 6, 16, 4, 4


def _np_attention(q, k, v, mask=None):
    """softmax(QKᵀ/√d_k)V in numpy, the masked logits removed."""
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.exp(logits)
    weights = weights / weights.sum(-1, keepdims=True)
    return weights @ v, weights


def _random_mask(rng, shape):
    """Random bool mask with at least one True per row (key 0 always kept)."""
    mask = rng.random(shape) > 0.4
    mask[..., 0] = True
    return mask


def test_causal_mask_is_lower_triangular_and_handles_suffix_queries():
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(compute_causal_mask(4)), np.tril(np.ones((4, 4), bool))
    )
    # 2 queries that are the last 2 of 4 keys: query 0 sees keys 0..2.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(compute_causal_mask(2, 4)),
        [[True, True, True, False], [True, True, True, True]],
    )


def test_make_attention_mask_combines_padding_and_causal():
    padding = np.array([[1, 1, 0], [1, 1, 1]])
    mask = keras.ops.convert_to_numpy(
        make_attention_mask(padding_mask=padding, use_causal_mask=True, query_length=3)
    )
    expected = np.tril(np.ones((3, 3), bool))[None] & padding[:, None, :].astype(bool)
    np.testing.assert_array_equal(np.broadcast_to(mask, (2, 3, 3)), expected)
    assert make_attention_mask() is None


def test_scaled_dot_product_attention_matches_numpy_formula():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(B, H, T_Q, DK)).astype("float32")
    k = rng.normal(size=(B, H, T_K, DK)).astype("float32")
    v = rng.normal(size=(B, H, T_K, 3)).astype("float32")
    mask = _random_mask(rng, (B, T_Q, T_K))  # broadcast over heads
    out, weights = ScaledDotProductAttention()(
        q, k, v, attention_mask=mask, return_attention_scores=True
    )
    ref_out, ref_weights = _np_attention(q, k, v, mask[:, None])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), ref_weights, atol=1e-6)
    assert out.shape == (B, H, T_Q, 3) and weights.shape == (B, H, T_Q, T_K)


def test_fully_masked_rows_give_zero_weights_not_nan():
    q = k = v = np.ones((1, 3, 4), "float32")
    mask = np.array([[[1, 1, 0], [0, 0, 0], [1, 0, 0]]], bool)
    out, weights = ScaledDotProductAttention()(
        q, k, v, attention_mask=mask, return_attention_scores=True
    )
    weights = keras.ops.convert_to_numpy(weights)
    np.testing.assert_array_equal(weights[0, 1], 0.0)
    np.testing.assert_allclose(weights[0, [0, 2]].sum(-1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_attention_masking_is_safe_under_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(1)
    # Large logits: would overflow float16 if the softmax were not in float32.
    q = (30 * rng.normal(size=(B, T_Q, 8))).astype("float32")
    k = (30 * rng.normal(size=(B, T_K, 8))).astype("float32")
    v = rng.normal(size=(B, T_K, 8)).astype("float32")
    mask = _random_mask(rng, (B, T_Q, T_K))
    layer = ScaledDotProductAttention()
    out, weights = layer(q, k, v, attention_mask=mask, return_attention_scores=True)
    weights = keras.ops.convert_to_numpy(keras.ops.cast(weights, "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))))
    assert np.all(weights[~mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=2e-2)


def _keras_and_ours(query_shape, value_shape):
    """A keras MHA and ours holding the same weights."""
    theirs = keras.layers.MultiHeadAttention(num_heads=H, key_dim=DK)
    ours = MultiHeadAttention(num_heads=H, key_dim=DK)
    theirs.build(query_shape, value_shape)
    ours.build(query_shape, value_shape)
    # keras stores W^Q as (D, h, d_k) and W^O as (h, d_v, D); ours as 2-D Dense.
    pairs = [
        (theirs.query_dense, ours.query_dense),
        (theirs.key_dense, ours.key_dense),
        (theirs.value_dense, ours.value_dense),
        (theirs.output_dense, ours.output_dense),
    ]
    for src, dst in pairs:
        kernel, bias = src.get_weights()
        if src is theirs.output_dense:
            kernel = kernel.reshape(-1, kernel.shape[-1])
        else:
            kernel = kernel.reshape(kernel.shape[0], -1)
            bias = bias.reshape(-1)
        dst.set_weights([kernel, bias])
    return theirs, ours


@pytest.mark.parametrize("case", ["self", "cross", "cross_masked", "self_causal_padded"])
def test_multi_head_attention_equals_keras_multi_head_attention(case):
    rng = np.random.default_rng(2)
    query = rng.normal(size=(B, T_Q, D)).astype("float32")
    value = query if case.startswith("self") else rng.normal(size=(B, T_K, D)).astype("float32")
    theirs, ours = _keras_and_ours(query.shape, value.shape)
    kwargs = {}
    if case == "cross_masked":
        kwargs["attention_mask"] = _random_mask(rng, (B, T_Q, T_K))
    if case == "self_causal_padded":
        padding = np.ones((B, T_Q), bool)
        padding[0, 3:] = False
        kwargs["attention_mask"] = np.broadcast_to(padding[:, None, :], (B, T_Q, T_Q))
        kwargs["use_causal_mask"] = True

    ref, ref_scores = theirs(query, value, return_attention_scores=True, **kwargs)
    out, scores = ours(query, value, return_attention_scores=True, **kwargs)
    ref, out = keras.ops.convert_to_numpy(ref), keras.ops.convert_to_numpy(out)
    assert out.shape == (B, T_Q, D)
    assert np.max(np.abs(out - ref)) < 1e-5
    assert np.max(np.abs(keras.ops.convert_to_numpy(scores - ref_scores))) < 1e-6
    # Guard against a vacuous comparison (e.g. both outputs constant).
    assert np.std(out) > 1e-2


def test_multi_head_attention_self_attention_defaults_and_output_dim():
    x = np.random.default_rng(3).normal(size=(B, T_Q, D)).astype("float32")
    layer = MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, output_dim=7)
    out, scores = layer(x, return_attention_scores=True)
    assert out.shape == (B, T_Q, 7) and scores.shape == (B, 2, T_Q, T_Q)
    assert layer.value_dense.kernel.shape == (D, 2 * 5)
    # value=None, key=None means self-attention: same as passing x explicitly.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(layer(x, x, x)), atol=1e-6
    )


def test_multi_head_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Received: num_heads=0"):
        MultiHeadAttention(num_heads=0, key_dim=4)
    with pytest.raises(ValueError, match="Received: dropout=1.5"):
        MultiHeadAttention(num_heads=2, key_dim=4, dropout=1.5)
