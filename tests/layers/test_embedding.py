"""Tests for sinusoidal_position_encoding and TokenAndPositionEmbedding."""

import math

import keras
import numpy as np
import pytest

from tfsft.layers import TokenAndPositionEmbedding
from tfsft.layers import sinusoidal_position_encoding


def _paper_formula(length, depth):
    """PE(pos, 2i) = sin(pos/10000^(2i/d)), PE(pos, 2i+1) = cos(pos/10000^(2i/d))."""
    pe = np.zeros((length, depth))
    for pos in range(length):
        for i in range((depth + 1) // 2):
            angle = pos / 10000 ** (2 * i / depth)
            pe[pos, 2 * i] = math.sin(angle)
            if 2 * i + 1 < depth:
                pe[pos, 2 * i + 1] = math.cos(angle)
    return pe


@pytest.mark.parametrize("length,depth", [(50, 16), (7, 9), (128, 64)])
def test_sinusoidal_encoding_matches_paper_formula(length, depth):
    pe = keras.ops.convert_to_numpy(sinusoidal_position_encoding(length, depth))
    assert pe.shape == (length, depth) and pe.dtype == np.float32
    np.testing.assert_allclose(pe, _paper_formula(length, depth), atol=2e-5)


def test_sinusoidal_encoding_start_index_is_a_row_offset():
    full = keras.ops.convert_to_numpy(sinusoidal_position_encoding(10, 8))
    tail = keras.ops.convert_to_numpy(sinusoidal_position_encoding(4, 8, start_index=6))
    np.testing.assert_allclose(tail, full[6:], atol=1e-6)


def test_token_and_position_embedding_is_scaled_tokens_plus_sinusoid():
    layer = TokenAndPositionEmbedding(vocabulary_size=20, sequence_length=16, embedding_dim=8)
    ids = np.array([[3, 4, 5, 0], [7, 7, 7, 7]])
    out = keras.ops.convert_to_numpy(layer(ids))
    table = layer.token_embedding.get_weights()[0]
    expected = math.sqrt(8) * table[ids] + _paper_formula(4, 8)[None]
    assert out.shape == (2, 4, 8)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # The token table is a keras Embedding and supports tied output logits.
    assert isinstance(layer.token_embedding, keras.layers.Embedding)
    logits = keras.ops.convert_to_numpy(layer.token_embedding(out, reverse=True))
    np.testing.assert_allclose(logits, out @ table.T, atol=1e-4)


def test_learned_position_embedding_uses_a_trainable_table():
    layer = TokenAndPositionEmbedding(
        vocabulary_size=20, sequence_length=6, embedding_dim=8,
        position_embedding="learned", scale_embeddings=False,
    )
    ids = np.array([[1, 2, 3]])
    out = keras.ops.convert_to_numpy(layer(ids, start_index=2))
    tokens = layer.token_embedding.get_weights()[0][ids]
    positions = layer.position_embedding_layer.get_weights()[0]
    np.testing.assert_allclose(out, tokens + positions[2:5][None], atol=1e-6)
    assert len(layer.trainable_weights) == 2


def test_embedding_dropout_only_in_training():
    layer = TokenAndPositionEmbedding(20, 8, 16, dropout=0.5)
    ids = np.ones((4, 8), "int32")
    inference = keras.ops.convert_to_numpy(layer(ids, training=False))
    train = keras.ops.convert_to_numpy(layer(ids, training=True))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(layer(ids)), atol=0)
    assert 0.3 < np.mean(train == 0.0) < 0.7


def test_embedding_rejects_unknown_position_embedding():
    with pytest.raises(ValueError, match="Received: position_embedding='rotary'"):
        TokenAndPositionEmbedding(10, 8, 4, position_embedding="rotary")
