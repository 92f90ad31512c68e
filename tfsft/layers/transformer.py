"""Transformer backbones with the KerasHub `Backbone` interface.

`TransformerEncoderBackbone` has the input/output dicts of KerasHub's
`BertBackbone`; `TransformerSeq2SeqBackbone` those of `T5Backbone`. Both
subclass `keras_hub.models.Backbone` (a functional `keras.Model`), so task
heads can take either a KerasHub backbone or one of these.
"""

import keras
from keras_hub.models import Backbone

from tfsft.layers.decoder import TransformerDecoder
from tfsft.layers.embedding import TokenAndPositionEmbedding
from tfsft.layers.encoder import TransformerEncoder
from tfsft.layers.encoder import head_dim

# Size presets (architecture only; weights are randomly initialized).
# "base" and "big" are Table 3 of Vaswani et al., 2017.
TRANSFORMER_PRESETS = {
    "tiny": {
        "num_layers": 2,
        "hidden_dim": 32,
        "num_heads": 2,
        "intermediate_dim": 64,
        "dropout": 0.1,
    },
    "base": {
        "num_layers": 6,
        "hidden_dim": 512,
        "num_heads": 8,
        "intermediate_dim": 2048,
        "dropout": 0.1,
    },
    "big": {
        "num_layers": 6,
        "hidden_dim": 1024,
        "num_heads": 16,
        "intermediate_dim": 4096,
        "dropout": 0.3,
    },
}


def get_preset_config(preset, **overrides):
    """Returns the constructor kwargs of a size preset, updated by `overrides`.

    Args:
        preset: str, a key of `TRANSFORMER_PRESETS`.
        **overrides: constructor arguments to add or replace
            (e.g. `vocabulary_size=8000, norm_first=True`).

    Returns:
        A new dict.
    """
    if preset not in TRANSFORMER_PRESETS:
        raise ValueError(
            f"Unknown preset. Expected one of {sorted(TRANSFORMER_PRESETS)}. "
            f"Received: preset={preset!r}"
        )
    return {**TRANSFORMER_PRESETS[preset], **overrides}


class _PresetMixin:
    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the backbone from a size preset name, or a KerasHub preset.

        If `preset` is a key of `TRANSFORMER_PRESETS` ("tiny", "base", "big"),
        returns a randomly initialized backbone of that size, with `kwargs`
        overriding the preset (`vocabulary_size` is required). Anything else
        (e.g. a directory written by `save_to_preset`) is handled by
        `keras_hub.models.Backbone.from_preset`.

        Example:
        ```python
        backbone = TransformerEncoderBackbone.from_preset(
            "tiny", vocabulary_size=100, norm_first=True
        )
        ```
        """
        if isinstance(preset, str) and preset in TRANSFORMER_PRESETS:
            if "vocabulary_size" not in kwargs:
                raise ValueError(
                    "`vocabulary_size` is required when building from a size "
                    f"preset. Received: preset={preset!r}, kwargs={kwargs}"
                )
            return cls(**get_preset_config(preset, **kwargs))
        return super().from_preset(preset, load_weights=load_weights, **kwargs)


def _validate(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim):
    for name, value in (
        ("vocabulary_size", vocabulary_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("intermediate_dim", intermediate_dim),
    ):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value}")
    head_dim(hidden_dim, num_heads)


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerEncoderBackbone(_PresetMixin, Backbone):
    """Transformer encoder backbone (BERT-style interface).

    token ids -> √d·E[x] + PE -> dropout -> N × encoder layer (-> LN if pre-LN).

    Inputs: `{"token_ids": (B, T) int32, "padding_mask": (B, T) int32/bool}`.
    Outputs: `{"sequence_output": (B, T, hidden_dim),
    "pooled_output": (B, hidden_dim)}`. `pooled_output` is the final hidden
    state of the *first* token (the [CLS] slot), with no extra dense/tanh
    pooler: put the token you classify from at position 0.

    Args:
        vocabulary_size: int, number of token ids.
        num_layers: int, encoder layers N.
        num_heads: int, attention heads h (must divide `hidden_dim`).
        hidden_dim: int, d_model.
        intermediate_dim: int, FFN inner size d_ff.
        max_sequence_length: int, maximum length (sizes the learned position
            table; sinusoidal positions work for any length).
        dropout: float, embedding and residual dropout.
        attention_dropout: float, dropout on attention weights.
        norm_first: bool, pre-LN (True) instead of the paper's post-LN.
        activation: str, FFN activation, `"relu"` (paper) or `"gelu"`.
        position_embedding: `"sinusoidal"` (paper) or `"learned"`.
        layer_norm_epsilon: float.
        dtype: dtype policy for all layers, e.g. `"mixed_bfloat16"`.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Attributes:
        token_embedding: the `keras.layers.ReversibleEmbedding` token table;
            `token_embedding(x, reverse=True)` gives tied output logits.
        embeddings: the `TokenAndPositionEmbedding` layer.
        encoder: the `TransformerEncoder` stack.

    Example:
    ```python
    backbone = TransformerEncoderBackbone.from_preset("tiny", vocabulary_size=100)
    out = backbone({"token_ids": np.array([[1, 5, 6, 0]]),
                    "padding_mask": np.array([[1, 1, 1, 0]])})
    out["sequence_output"].shape  # (1, 4, 32)
    out["pooled_output"].shape    # (1, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=512,
        dropout=0.1,
        attention_dropout=0.0,
        norm_first=False,
        activation="relu",
        position_embedding="sinusoidal",
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        _validate(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim)

        # === Layers ===
        self.embeddings = TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=max_sequence_length,
            embedding_dim=hidden_dim,
            position_embedding=position_embedding,
            dropout=dropout,
            dtype=dtype,
            name="embeddings",
        )
        self.token_embedding = self.embeddings.token_embedding
        self.encoder = TransformerEncoder(
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation=activation,
            norm_first=norm_first,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="encoder",
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.embeddings(token_ids)  # (B, T, D)
        x = self.encoder(x, padding_mask=padding_mask)  # (B, T, D)
        pooled = x[:, 0, :]  # (B, D): the first token's final state
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.activation = activation
        self.position_embedding = position_embedding
        self.layer_norm_epsilon = layer_norm_epsilon

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "norm_first": self.norm_first,
                "activation": self.activation,
                "position_embedding": self.position_embedding,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerSeq2SeqBackbone(_PresetMixin, Backbone):
    """The paper's encoder-decoder Transformer (T5Backbone-style interface).

    Inputs: `{"encoder_token_ids": (B, T_e), "encoder_padding_mask": (B, T_e),
    "decoder_token_ids": (B, T_d), "decoder_padding_mask": (B, T_d)}`.
    Outputs: `{"encoder_sequence_output": (B, T_e, hidden_dim),
    "decoder_sequence_output": (B, T_d, hidden_dim)}`. The decoder uses a
    causal mask, so output t depends only on decoder tokens ≤ t. Logits are
    the task head's job, e.g. `backbone.token_embedding(h, reverse=True)`.

    Args:
        vocabulary_size: int, number of token ids (shared by source and target).
        num_layers: int, encoder layers (and decoder layers by default).
        num_heads: int, attention heads h (must divide `hidden_dim`).
        hidden_dim: int, d_model.
        intermediate_dim: int, FFN inner size d_ff.
        max_sequence_length: int, maximum length of either side.
        dropout: float, embedding and residual dropout.
        attention_dropout: float, dropout on attention weights.
        norm_first: bool, pre-LN instead of the paper's post-LN.
        activation: str, FFN activation, `"relu"` (paper) or `"gelu"`.
        position_embedding: `"sinusoidal"` (paper) or `"learned"`.
        tie_embeddings: bool. If True (paper §3.4), encoder and decoder use one
            `TokenAndPositionEmbedding` layer (`encoder_embedding is
            decoder_embedding`), hence one token table.
        num_decoder_layers: int, decoder layers; defaults to `num_layers`.
        layer_norm_epsilon: float.
        dtype: dtype policy for all layers, e.g. `"mixed_bfloat16"`.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Attributes:
        token_embedding: the decoder's `keras.layers.ReversibleEmbedding`
            (the source one too if tied): use it for output logits.
        encoder_embedding, decoder_embedding: `TokenAndPositionEmbedding`s.
        encoder: the `TransformerEncoder`; decoder: the `TransformerDecoder`.

    Generation: `encode()` once, `decoder_cache()` once (cross-attention
    keys/values of the encoder output, empty self-attention caches), then one
    `decode_step()` per target position, which runs the decoder on that
    position only (key/value cache). `decode()` runs a whole prefix.

    Example:
    ```python
    backbone = TransformerSeq2SeqBackbone.from_preset("tiny", vocabulary_size=100)
    out = backbone({
        "encoder_token_ids": np.array([[4, 5, 6, 0]]),
        "encoder_padding_mask": np.array([[1, 1, 1, 0]]),
        "decoder_token_ids": np.array([[1, 7]]),
        "decoder_padding_mask": np.array([[1, 1]]),
    })
    out["decoder_sequence_output"].shape  # (1, 2, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        max_sequence_length=512,
        dropout=0.1,
        attention_dropout=0.0,
        norm_first=False,
        activation="relu",
        position_embedding="sinusoidal",
        tie_embeddings=True,
        num_decoder_layers=None,
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        _validate(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim)
        decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers

        # === Layers ===
        def embedding(name):
            return TokenAndPositionEmbedding(
                vocabulary_size=vocabulary_size,
                sequence_length=max_sequence_length,
                embedding_dim=hidden_dim,
                position_embedding=position_embedding,
                dropout=dropout,
                dtype=dtype,
                name=name,
            )

        def stack(cls, n, name):
            return cls(
                num_layers=n,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation=activation,
                norm_first=norm_first,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=name,
            )

        if tie_embeddings:
            self.encoder_embedding = embedding("shared_embedding")
            self.decoder_embedding = self.encoder_embedding
        else:
            self.encoder_embedding = embedding("encoder_embedding")
            self.decoder_embedding = embedding("decoder_embedding")
        self.token_embedding = self.decoder_embedding.token_embedding
        self.encoder = stack(TransformerEncoder, num_layers, "encoder")
        self.decoder = stack(TransformerDecoder, decoder_layers, "decoder")

        # === Functional model ===
        def int_input(name):
            return keras.Input(shape=(None,), dtype="int32", name=name)

        inputs = {
            name: int_input(name)
            for name in (
                "encoder_token_ids",
                "encoder_padding_mask",
                "decoder_token_ids",
                "decoder_padding_mask",
            )
        }
        encoded = self.encoder_embedding(inputs["encoder_token_ids"])  # (B, T_e, D)
        encoded = self.encoder(encoded, padding_mask=inputs["encoder_padding_mask"])
        decoded = self.decoder_embedding(inputs["decoder_token_ids"])  # (B, T_d, D)
        decoded = self.decoder(
            decoded,
            encoded,
            decoder_padding_mask=inputs["decoder_padding_mask"],
            encoder_padding_mask=inputs["encoder_padding_mask"],
        )  # (B, T_d, D)
        super().__init__(
            inputs=inputs,
            outputs={
                "encoder_sequence_output": encoded,
                "decoder_sequence_output": decoded,
            },
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.max_sequence_length = max_sequence_length
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.activation = activation
        self.position_embedding = position_embedding
        self.tie_embeddings = tie_embeddings
        self.num_decoder_layers = num_decoder_layers
        self.layer_norm_epsilon = layer_norm_epsilon

    def encode(self, encoder_token_ids, encoder_padding_mask=None, training=False):
        """Runs the encoder only.

        Args:
            encoder_token_ids: `(B, T_e)` int.
            encoder_padding_mask: optional `(B, T_e)`, 1/True for real tokens.
            training: bool.

        Returns:
            `(B, T_e, hidden_dim)` encoder output (the decoder's "memory").
        """
        x = self.encoder_embedding(encoder_token_ids, training=training)
        return self.encoder(x, padding_mask=encoder_padding_mask, training=training)

    def decode(
        self,
        decoder_token_ids,
        encoder_sequence_output,
        encoder_padding_mask=None,
        decoder_padding_mask=None,
        training=False,
    ):
        """Runs the decoder on a target prefix given the encoder output.

        Args:
            decoder_token_ids: `(B, T_d)` int, the target prefix.
            encoder_sequence_output: `(B, T_e, hidden_dim)` from `encode()`.
            encoder_padding_mask: optional `(B, T_e)`.
            decoder_padding_mask: optional `(B, T_d)`.
            training: bool.

        Returns:
            `(B, T_d, hidden_dim)`; row t is the state that predicts token t+1.
        """
        x = self.decoder_embedding(decoder_token_ids, training=training)
        return self.decoder(
            x,
            encoder_sequence_output,
            decoder_padding_mask=decoder_padding_mask,
            encoder_padding_mask=encoder_padding_mask,
            training=training,
        )

    def decoder_cache(self, encoder_sequence_output, cache_length):
        """The key/value caches that `decode_step` starts from.

        Args:
            encoder_sequence_output: `(B, T_e, hidden_dim)` from `encode()`.
            cache_length: int, positions each self-attention cache holds
                (at least the number of `decode_step` calls).

        Returns:
            `(self_cache, cross_cache)`: per decoder layer a `(key, value)`
            pair each (tuples); self-attention zeros `(B, h, cache_length,
            d_k)`, cross-attention the projected encoder output
            `(B, h, T_e, d_k)`, computed here once.
        """
        batch_size = keras.ops.shape(encoder_sequence_output)[0]
        return self.decoder.initial_cache(
            batch_size, cache_length, encoder_sequence=encoder_sequence_output
        )

    def decode_step(
        self,
        decoder_token_ids,
        cache_index,
        self_cache,
        cross_cache,
        encoder_padding_mask=None,
    ):
        """Decodes the single target position `cache_index` with the caches.

        Inference only (no dropout). Equal to row `cache_index` of `decode()`
        on the prefix `0 … cache_index` (when the prefix has no padding).

        Args:
            decoder_token_ids: `(B, 1)` int, the token at `cache_index`.
            cache_index: int or scalar int tensor, its position.
            self_cache, cross_cache: from `decoder_cache()` (the self cache
                as returned by the previous step).
            encoder_padding_mask: optional `(B, T_e)`.

        Returns:
            `(hidden, self_cache)`: `(B, 1, hidden_dim)`, the state that
            predicts token `cache_index + 1`, and the self-attention caches
            with position `cache_index` written.
        """
        x = self.decoder_embedding(
            decoder_token_ids, start_index=cache_index, training=False
        )  # (B, 1, D), position embedding of `cache_index`
        return self.decoder.call_with_cache(
            x,
            self_cache,
            cache_index,
            cross_attention_cache=cross_cache,
            encoder_padding_mask=encoder_padding_mask,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "max_sequence_length": self.max_sequence_length,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "norm_first": self.norm_first,
                "activation": self.activation,
                "position_embedding": self.position_embedding,
                "tie_embeddings": self.tie_embeddings,
                "num_decoder_layers": self.num_decoder_layers,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
