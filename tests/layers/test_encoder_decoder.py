"""Tests for the encoder/decoder layers and stacks."""

import keras
import numpy as np
import pytest

from tfsft.layers import TransformerDecoder
from tfsft.layers import TransformerDecoderLayer
from tfsft.layers import TransformerEncoder
from tfsft.layers import TransformerEncoderLayer

B, T, D = 2, 6, 16


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _x(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_residual_formula(norm_first):
    x = _x()
    layer = TransformerEncoderLayer(num_heads=2, intermediate_dim=32, norm_first=norm_first)
    out = _np(layer(x))
    mha, ffn = layer.self_attention, layer.feed_forward
    ln1, ln2 = layer.self_attention_layer_norm, layer.feed_forward_layer_norm
    if norm_first:  # x + MHA(LN(x)), then + FFN(LN(·))
        h = x + _np(mha(ln1(x)))
        expected = h + _np(ffn(ln2(h)))
    else:  # LN(x + MHA(x)), then LN(· + FFN(·))
        h = _np(ln1(x + _np(mha(x))))
        expected = _np(ln2(h + _np(ffn(h))))
        # Post-LN output is normalized per position.
        np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_encoder_layer_ignores_padded_positions():
    x = _x()
    padding = np.ones((B, T), "int32")
    padding[:, 4:] = 0
    layer = TransformerEncoderLayer(num_heads=2, intermediate_dim=32)
    out = _np(layer(x, padding_mask=padding))
    x2 = x.copy()
    x2[:, 4:] += 10.0
    out2 = _np(layer(x2, padding_mask=padding))
    np.testing.assert_allclose(out[:, :4], out2[:, :4], atol=1e-5)
    # Without the mask the same change does leak into real positions.
    assert not np.allclose(_np(layer(x))[:, :4], _np(layer(x2))[:, :4], atol=1e-3)


def test_decoder_layer_is_causal_and_ignores_encoder_padding():
    dec, enc = _x(1), _x(2, (B, 5, D))
    enc_padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    layer = TransformerDecoderLayer(num_heads=2, intermediate_dim=32)
    out = _np(layer(dec, enc, encoder_padding_mask=enc_padding))
    assert out.shape == (B, T, D)

    t = 2
    dec2 = dec.copy()
    dec2[:, t + 1:] = _x(3)[:, t + 1:]  # perturb the future
    out2 = _np(layer(dec2, enc, encoder_padding_mask=enc_padding))
    np.testing.assert_allclose(out[:, : t + 1], out2[:, : t + 1], atol=1e-5)
    assert not np.allclose(out[:, t + 1:], out2[:, t + 1:], atol=1e-3)

    enc2 = enc.copy()
    enc2[0, 3:] += 10.0  # padded encoder positions of example 0
    out3 = _np(layer(dec, enc2, encoder_padding_mask=enc_padding))
    np.testing.assert_allclose(out, out3, atol=1e-5)
    enc2[0, 0] += 10.0  # a real encoder position changes every output
    out4 = _np(layer(dec, enc2, encoder_padding_mask=enc_padding))
    assert np.all(np.abs(out4[0] - out[0]).max(-1) > 1e-3)


def test_decoder_layer_without_encoder_is_decoder_only():
    layer = TransformerDecoderLayer(num_heads=2, intermediate_dim=32)
    out = layer(_x())
    assert out.shape == (B, T, D)
    assert layer.cross_attention is None
    with pytest.raises(ValueError, match="Received: encoder_sequence="):
        layer(_x(), _x(1))


@pytest.mark.parametrize("cls", [TransformerEncoderLayer, TransformerDecoderLayer])
def test_hidden_dim_must_be_divisible_by_num_heads(cls):
    with pytest.raises(ValueError, match="Received: hidden_dim=16, num_heads=3"):
        cls(num_heads=3, intermediate_dim=8)(_x())


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_have_num_layers_and_final_norm_for_pre_ln(norm_first):
    encoder = TransformerEncoder(num_layers=3, num_heads=2, intermediate_dim=32,
                                 norm_first=norm_first)
    decoder = TransformerDecoder(num_layers=2, num_heads=2, intermediate_dim=32,
                                 norm_first=norm_first)
    memory = encoder(_x())
    out = decoder(_x(1, (B, 4, D)), memory)
    assert memory.shape == (B, T, D) and out.shape == (B, 4, D)
    assert len(encoder.encoder_layers) == 3 and len(decoder.decoder_layers) == 2
    assert (encoder.final_layer_norm is not None) == norm_first
    # Both stacks end with a LayerNorm (post-LN layer or final LN): zero mean.
    np.testing.assert_allclose(_np(out).mean(-1), 0.0, atol=1e-5)


def test_encoder_stack_equals_its_layers_applied_in_order():
    x = _x()
    padding = np.ones((B, T), bool)
    padding[1, 3:] = False
    encoder = TransformerEncoder(num_layers=2, num_heads=2, intermediate_dim=32)
    out = _np(encoder(x, padding_mask=padding))
    h = x
    for layer in encoder.encoder_layers:
        h = layer(h, padding_mask=padding)
    np.testing.assert_allclose(out, _np(h), atol=1e-5)


def test_dropout_is_active_only_in_training():
    layer = TransformerEncoderLayer(num_heads=2, intermediate_dim=32, dropout=0.3)
    x = _x()
    np.testing.assert_array_equal(_np(layer(x)), _np(layer(x, training=False)))
    assert not np.allclose(_np(layer(x, training=True)), _np(layer(x, training=True)))
