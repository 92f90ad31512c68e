"""Token embeddings plus (sinusoidal or learned) position encodings.

Vaswani et al., 2017, §3.4-3.5:
    PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
    embed(x)_t  = √d_model · E[x_t] + PE(t)
"""

import math

import keras
from keras import ops

from tfsft.layers._utils import check_rate
from tfsft.layers._utils import clone_initializer

POSITION_EMBEDDINGS = ("sinusoidal", "learned")


def sinusoidal_position_encoding(
    length, depth, start_index=0, max_wavelength=10000.0, dtype="float32"
):
    """The paper's fixed sinusoidal position encoding.

    PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
    Even channels hold sines and odd channels cosines (interleaved, as in the
    paper). Computed in float32 and cast to `dtype` at the end.

    Args:
        length: int or scalar int tensor, number of positions `T`.
        depth: int, encoding size `d` (= d_model).
        start_index: int or scalar int tensor, position of the first row
            (useful when encoding a suffix during step-by-step decoding).
        max_wavelength: float, the paper's 10000.
        dtype: output dtype.

    Returns:
        A `(length, depth)` tensor.

    Example:
    ```python
    pe = sinusoidal_position_encoding(50, 16)  # (50, 16); pe[0] = [0, 1, 0, 1, ...]
    ```
    """
    positions = ops.cast(ops.arange(length, dtype="int32"), "float32")  # (T,)
    positions = positions + ops.cast(start_index, "float32")
    channels = ops.arange(depth, dtype="int32")  # (d,)
    two_i = ops.cast(channels - channels % 2, "float32")  # 2i for channels 2i, 2i+1
    inverse_freq = ops.power(float(max_wavelength), -two_i / float(depth))  # (d,)
    angles = ops.expand_dims(positions, 1) * ops.expand_dims(inverse_freq, 0)  # (T, d)
    is_even = ops.expand_dims(ops.equal(channels % 2, 0), 0)  # (1, d)
    encoding = ops.where(is_even, ops.sin(angles), ops.cos(angles))  # (T, d)
    return ops.cast(encoding, dtype)


@keras.saving.register_keras_serializable(package="tfsft")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """√d_model-scaled token embedding + position encoding, then dropout.

    embed(x)_t = √d · E[x_t] + PE(t)   (Vaswani et al., 2017, §3.4-3.5).
    Shapes: token ids `(B, T)` int -> `(B, T, embedding_dim)`.

    The token table is the `token_embedding` sublayer, a
    `keras.layers.ReversibleEmbedding` (a `keras.layers.Embedding` subclass),
    so output heads can tie weights: `token_embedding(x, reverse=True)`
    computes `x @ Eᵀ`, logits of shape `(B, T, vocabulary_size)`.

    Args:
        vocabulary_size: int, number of token ids.
        sequence_length: int, maximum sequence length. Only the learned
            position table depends on it (sinusoidal works for any length).
        embedding_dim: int, `d_model`.
        position_embedding: `"sinusoidal"` (paper, no weights) or `"learned"`
            (a trainable `(sequence_length, d)` table, initialized N(0, 0.02²)).
        scale_embeddings: bool, multiply token embeddings by √d (paper: True).
        dropout: float in [0, 1), dropout on the sum (paper: P_drop = 0.1).
        embeddings_initializer: initializer for the token table. Defaults to
            N(0, 1/d), so that √d·E[x] has unit variance (as in fairseq).
        max_wavelength: float, the sinusoid's 10000.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        token_ids: `(B, T)` int tensor.
        start_index: int or scalar tensor, position of the first token.
        training: bool, enables dropout.

    Example:
    ```python
    emb = TokenAndPositionEmbedding(1000, 128, 32)
    x = emb(np.array([[5, 6, 7, 0]]))                   # (1, 4, 32)
    logits = emb.token_embedding(x, reverse=True)        # (1, 4, 1000)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        embedding_dim,
        position_embedding="sinusoidal",
        scale_embeddings=True,
        dropout=0.0,
        embeddings_initializer=None,
        max_wavelength=10000.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (
            ("vocabulary_size", vocabulary_size),
            ("sequence_length", sequence_length),
            ("embedding_dim", embedding_dim),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{arg}` must be a positive int. Received: {arg}={value}"
                )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}. "
                f"Received: position_embedding={position_embedding!r}"
            )
        check_rate("dropout", dropout)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.position_embedding = position_embedding
        self.scale_embeddings = scale_embeddings
        self.dropout = dropout
        self.embeddings_initializer = (
            None
            if embeddings_initializer is None
            else keras.initializers.get(embeddings_initializer)
        )
        self.max_wavelength = max_wavelength

        token_initializer = (
            keras.initializers.RandomNormal(stddev=embedding_dim**-0.5)
            if self.embeddings_initializer is None
            else clone_initializer(self.embeddings_initializer)
        )
        self.token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            embedding_dim,
            tie_weights=True,
            embeddings_initializer=token_initializer,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding_layer = None
        if position_embedding == "learned":
            self.position_embedding_layer = keras.layers.Embedding(
                sequence_length,
                embedding_dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="embedding_dropout"
        )

    def build(self, input_shape=None):
        self.token_embedding.build(input_shape)
        if self.position_embedding_layer is not None:
            self.position_embedding_layer.build((self.sequence_length,))
        self.built = True

    def call(self, token_ids, start_index=0, training=None):
        x = self.token_embedding(token_ids)  # (B, T, D)
        if self.scale_embeddings:
            x = x * ops.cast(math.sqrt(self.embedding_dim), x.dtype)
        length = ops.shape(token_ids)[-1]
        if self.position_embedding == "sinusoidal":
            positions = sinusoidal_position_encoding(
                length,
                self.embedding_dim,
                start_index=start_index,
                max_wavelength=self.max_wavelength,
                dtype=x.dtype,
            )  # (T, D)
        else:
            position_ids = ops.arange(length, dtype="int32") + ops.cast(
                start_index, "int32"
            )  # (T,)
            positions = ops.cast(self.position_embedding_layer(position_ids), x.dtype)
        x = x + ops.expand_dims(positions, 0)  # (B, T, D)
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "embedding_dim": self.embedding_dim,
                "position_embedding": self.position_embedding,
                "scale_embeddings": self.scale_embeddings,
                "dropout": self.dropout,
                "embeddings_initializer": (
                    None
                    if self.embeddings_initializer is None
                    else keras.initializers.serialize(self.embeddings_initializer)
                ),
                "max_wavelength": self.max_wavelength,
            }
        )
        return config
