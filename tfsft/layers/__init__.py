"""Transformer building blocks ("Attention Is All You Need") as Keras 3 layers.

See docs/transformer.md for the formulas, shapes and examples.
"""

from tfsft.layers.attention import MultiHeadAttention
from tfsft.layers.attention import ScaledDotProductAttention
from tfsft.layers.attention import compute_causal_mask
from tfsft.layers.attention import make_attention_mask
from tfsft.layers.decoder import TransformerDecoder
from tfsft.layers.decoder import TransformerDecoderLayer
from tfsft.layers.embedding import TokenAndPositionEmbedding
from tfsft.layers.embedding import sinusoidal_position_encoding
from tfsft.layers.encoder import TransformerEncoder
from tfsft.layers.encoder import TransformerEncoderLayer
from tfsft.layers.feed_forward import PositionwiseFeedForward
from tfsft.layers.transformer import TRANSFORMER_PRESETS
from tfsft.layers.transformer import TransformerEncoderBackbone
from tfsft.layers.transformer import TransformerSeq2SeqBackbone
from tfsft.layers.transformer import get_preset_config

__all__ = [
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "ScaledDotProductAttention",
    "TRANSFORMER_PRESETS",
    "TokenAndPositionEmbedding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderBackbone",
    "TransformerEncoderLayer",
    "TransformerSeq2SeqBackbone",
    "compute_causal_mask",
    "get_preset_config",
    "make_attention_mask",
    "sinusoidal_position_encoding",
]
