"""Transformer decoder layer and decoder stack (Vaswani et al., 2017, §3.1).

Each layer has three sublayers: causal (masked) self-attention,
cross-attention over the encoder output ("memory"), and a position-wise FFN,
each wrapped as  LayerNorm(x + Dropout(Sublayer(x)))  (post-LN, the paper) or
x + Dropout(Sublayer(LayerNorm(x)))  (pre-LN, `norm_first=True`).

Step-by-step decoding (`call_with_cache`, inference only) runs one position
at a time with a key/value cache: the self-attention keys/values of the
positions decoded so far sit in a fixed-size cache, written at the current
position (a one-hot `where`, a static-shape op, not a dynamic-update-slice);
cross-attention keys/values are projected once from the encoder output.
Output at position t equals row t of `call` on the prefix ≤ t (dropout off).
"""

import keras
from keras import ops

from tfsft.layers._utils import check_rate
from tfsft.layers._utils import clone_initializer
from tfsft.layers.attention import MultiHeadAttention
from tfsft.layers.attention import make_attention_mask
from tfsft.layers.encoder import _check_positive_int
from tfsft.layers.encoder import head_dim
from tfsft.layers.feed_forward import PositionwiseFeedForward


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerDecoderLayer(keras.layers.Layer):
    """One decoder layer: causal self-attention + cross-attention + FFN.

    Post-LN (paper, default), with m the encoder output:
        x = LN(x + Drop(MaskedMHA(x)))
        x = LN(x + Drop(MHA(x, m)))
        x = LN(x + Drop(FFN(x)))
    Pre-LN (`norm_first=True`) moves each LN inside the residual branch.

    If the layer is first called without `encoder_sequence`, it is built
    without cross-attention (a GPT-style decoder-only block).
    Shapes: `(B, T_d, D)` and `(B, T_e, D)` -> `(B, T_d, D)`.
    One position at a time with a key/value cache (inference):
    `initial_self_attention_cache`, `compute_cross_attention_cache`,
    `call_with_cache`.

    Args:
        num_heads: int, attention heads `h` (D must be divisible by it).
        intermediate_dim: int, FFN inner size `d_ff`.
        dropout: float, residual dropout P_drop (paper: 0.1).
        attention_dropout: float, dropout on attention weights (paper: 0).
        activation: str or callable, FFN activation (`"relu"` or `"gelu"`).
        norm_first: bool, pre-LN instead of the paper's post-LN.
        layer_norm_epsilon: float, LayerNorm epsilon.
        kernel_initializer: initializer for all projection kernels.
        bias_initializer: initializer for all projection biases.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        decoder_sequence: `(B, T_d, D)` embedded target tokens.
        encoder_sequence: optional `(B, T_e, D)` encoder output.
        decoder_padding_mask: optional `(B, T_d)`, 1/True for real tokens.
        decoder_attention_mask: optional, broadcastable to `(B, T_d, T_d)`.
        encoder_padding_mask: optional `(B, T_e)`, 1/True for real tokens.
        encoder_attention_mask: optional, broadcastable to `(B, T_d, T_e)`.
        use_causal_mask: bool, default True: position t sees only ≤ t.
        training: bool, enables dropout.

    Example:
    ```python
    layer = TransformerDecoderLayer(num_heads=2, intermediate_dim=64)
    y = layer(keras.random.normal((2, 7, 32)), keras.random.normal((2, 5, 32)))
    ```
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        attention_dropout=0.0,
        activation="relu",
        norm_first=False,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("num_heads", num_heads)
        _check_positive_int("intermediate_dim", intermediate_dim)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = keras.activations.get(activation)
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.cross_attention = None

    def _attention(self, key_dim, name):
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.attention_dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def _layer_norm(self, name, shape):
        layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        layer_norm.build(shape)
        return layer_norm

    def _dropout(self, name):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        hidden_dim = decoder_sequence_shape[-1]
        key_dim = head_dim(hidden_dim, self.num_heads)

        self.self_attention = self._attention(key_dim, "self_attention")
        self.self_attention.build(decoder_sequence_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", decoder_sequence_shape
        )

        if encoder_sequence_shape is not None:
            self.cross_attention = self._attention(key_dim, "cross_attention")
            self.cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")
            self.cross_attention_layer_norm = self._layer_norm(
                "cross_attention_layer_norm", decoder_sequence_shape
            )

        self.feed_forward = PositionwiseFeedForward(
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.feed_forward.build(decoder_sequence_shape)
        self.feed_forward_dropout = self._dropout("feed_forward_dropout")
        self.feed_forward_layer_norm = self._layer_norm(
            "feed_forward_layer_norm", decoder_sequence_shape
        )
        self.built = True

    def _sublayer(self, x, fn, layer_norm, dropout, training):
        """Residual wrapper: post-LN LN(x + Drop(f(x))) or pre-LN x + Drop(f(LN(x)))."""
        residual = x
        if self.norm_first:
            x = layer_norm(x)
        x = residual + dropout(fn(x), training=training)
        if not self.norm_first:
            x = layer_norm(x)
        return x

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        use_causal_mask=True,
        training=None,
    ):
        has_cross = self.cross_attention is not None
        if (encoder_sequence is not None) != has_cross:
            raise ValueError(
                "`encoder_sequence` must be passed if and only if the layer was "
                "built with cross-attention (i.e. first called with an "
                f"encoder_sequence). Received: encoder_sequence={encoder_sequence}"
            )
        decoder_length = ops.shape(decoder_sequence)[1]
        self_mask = make_attention_mask(
            padding_mask=decoder_padding_mask,
            attention_mask=decoder_attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=decoder_length,
        )  # (B, T_d, T_d)
        x = decoder_sequence  # (B, T_d, D)

        # Sublayer 1: masked (causal) self-attention.
        x = self._sublayer(
            x,
            lambda h: self.self_attention(h, attention_mask=self_mask, training=training),
            self.self_attention_layer_norm,
            self.self_attention_dropout,
            training,
        )

        # Sublayer 2: cross-attention, queries from the decoder, keys/values
        # from the encoder output.
        if has_cross:
            cross_mask = make_attention_mask(
                padding_mask=encoder_padding_mask,
                attention_mask=encoder_attention_mask,
            )  # (B, 1|T_d, T_e)
            x = self._sublayer(
                x,
                lambda h: self.cross_attention(
                    h, encoder_sequence, attention_mask=cross_mask, training=training
                ),
                self.cross_attention_layer_norm,
                self.cross_attention_dropout,
                training,
            )

        # Sublayer 3: position-wise feed-forward.
        x = self._sublayer(
            x,
            lambda h: self.feed_forward(h, training=training),
            self.feed_forward_layer_norm,
            self.feed_forward_dropout,
            training,
        )
        return x  # (B, T_d, D)

    # --- step-by-step decoding with a key/value cache (inference only) ---

    def initial_self_attention_cache(self, batch_size, cache_length):
        """An empty self-attention cache: `(key, value)` zeros, each `(B, h, S, d_k)`.

        Args:
            batch_size: int or scalar int tensor, B.
            cache_length: int, S, the number of positions the cache holds.
        """
        attention = self.self_attention
        shape = (batch_size, self.num_heads, cache_length, attention.key_dim)
        return (
            ops.zeros(shape, dtype=self.compute_dtype),
            ops.zeros(shape[:3] + (attention.value_dim,), dtype=self.compute_dtype),
        )

    def compute_cross_attention_cache(self, encoder_sequence):
        """Cross-attention keys/values, computed once per source.

        Args:
            encoder_sequence: `(B, T_e, D)` encoder output.

        Returns:
            `(key, value)`, each `(B, h, T_e, d_k)`.
        """
        if self.cross_attention is None:
            raise ValueError("This layer was built without cross-attention.")
        return self.cross_attention.compute_key_value(encoder_sequence)

    def call_with_cache(
        self,
        decoder_sequence,
        self_attention_cache,
        cache_index,
        cross_attention_cache=None,
        encoder_padding_mask=None,
    ):
        """Runs the (built) layer on the single position `cache_index` (no dropout).

        Args:
            decoder_sequence: `(B, 1, D)`, the layer input at position
                `cache_index`.
            self_attention_cache: `(key, value)`, each `(B, h, S, d_k)`:
                self-attention keys/values of positions `< cache_index`
                (later positions are ignored); `S > cache_index`.
            cache_index: int or scalar int tensor, the position decoded.
            cross_attention_cache: `(key, value)`, each `(B, h, T_e, d_k)`,
                from `compute_cross_attention_cache`; required iff the layer
                has cross-attention.
            encoder_padding_mask: optional `(B, T_e)`, 1/True for real tokens.

        Returns:
            `(output, self_attention_cache)`: output `(B, 1, D)`, equal to
            row `cache_index` of `call` on the prefix; the cache with position
            `cache_index` written.
        """
        if (cross_attention_cache is not None) != (self.cross_attention is not None):
            raise ValueError(
                "`cross_attention_cache` must be passed if and only if the layer "
                "has cross-attention."
            )
        key_cache, value_cache = self_attention_cache  # (B, h, S, d_k) each
        cache_length = ops.shape(key_cache)[2]
        positions = ops.arange(cache_length, dtype="int32")  # (S,)
        cache_index = ops.cast(cache_index, "int32")
        is_index = ops.reshape(ops.equal(positions, cache_index), (1, 1, -1, 1))  # (1, 1, S, 1)
        visible = ops.reshape(ops.less_equal(positions, cache_index), (1, 1, -1))  # (1, 1, S)
        new_cache = []

        def self_attention(h):
            key, value = self.self_attention.compute_key_value(h)  # (B, h, 1, d_k) each
            key = ops.where(is_index, key, key_cache)  # (B, h, S, d_k)
            value = ops.where(is_index, value, value_cache)
            new_cache.extend((key, value))
            return self.self_attention.attend(h, key, value, attention_mask=visible)

        x = ops.cast(decoder_sequence, self.compute_dtype)  # as `__call__` autocasts
        x = self._sublayer(x, self_attention, self.self_attention_layer_norm, self.self_attention_dropout,
                           training=False)  # (B, 1, D)
        if cross_attention_cache is not None:
            cross_mask = make_attention_mask(padding_mask=encoder_padding_mask)  # (B, 1, T_e)
            x = self._sublayer(
                x,
                lambda h: self.cross_attention.attend(
                    h, *cross_attention_cache, attention_mask=cross_mask
                ),
                self.cross_attention_layer_norm,
                self.cross_attention_dropout,
                training=False,
            )
        x = self._sublayer(
            x,
            lambda h: self.feed_forward(h, training=False),
            self.feed_forward_layer_norm,
            self.feed_forward_dropout,
            training=False,
        )
        return x, tuple(new_cache)  # (B, 1, D), ((B, h, S, d_k),) * 2

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return decoder_sequence_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation": keras.activations.serialize(self.activation),
                "norm_first": self.norm_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerDecoder(keras.layers.Layer):
    """A stack of `num_layers` `TransformerDecoderLayer`s.

    Every layer attends to the same `encoder_sequence` (the top encoder
    output). With `norm_first=True` a final LayerNorm is applied to the output.
    Shapes: `(B, T_d, D)`, `(B, T_e, D)` -> `(B, T_d, D)`.
    One position at a time with key/value caches (inference): `initial_cache`,
    then `call_with_cache` per position.

    Args:
        num_layers: int, number of layers N (paper: 6).
        num_heads, intermediate_dim, dropout, attention_dropout, activation,
        norm_first, layer_norm_epsilon, kernel_initializer, bias_initializer:
            as in `TransformerDecoderLayer`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments: as `TransformerDecoderLayer`.

    Example:
    ```python
    decoder = TransformerDecoder(num_layers=2, num_heads=2, intermediate_dim=64)
    y = decoder(keras.random.normal((2, 7, 32)), keras.random.normal((2, 5, 32)))
    ```
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        attention_dropout=0.0,
        activation="relu",
        norm_first=False,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("num_layers", num_layers)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = keras.activations.get(activation)
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.decoder_layers = [
            TransformerDecoderLayer(
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation=self.activation,
                norm_first=norm_first,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=f"decoder_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_layer_norm = None
        if norm_first:
            self.final_layer_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon,
                dtype=self.dtype_policy,
                name="final_layer_norm",
            )

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        for layer in self.decoder_layers:
            layer.build(decoder_sequence_shape, encoder_sequence_shape)
        if self.final_layer_norm is not None:
            self.final_layer_norm.build(decoder_sequence_shape)
        self.built = True

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        use_causal_mask=True,
        training=None,
    ):
        # Combine the masks once, then share them across layers.
        self_mask = make_attention_mask(
            padding_mask=decoder_padding_mask,
            attention_mask=decoder_attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=ops.shape(decoder_sequence)[1],
        )  # (B, T_d, T_d) or None
        cross_mask = make_attention_mask(
            padding_mask=encoder_padding_mask, attention_mask=encoder_attention_mask
        )  # (B, 1|T_d, T_e) or None
        x = decoder_sequence  # (B, T_d, D)
        for layer in self.decoder_layers:
            x = layer(
                x,
                encoder_sequence,
                decoder_attention_mask=self_mask,
                encoder_attention_mask=cross_mask,
                use_causal_mask=False,  # already folded into self_mask
                training=training,
            )
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
        return x  # (B, T_d, D)

    # --- step-by-step decoding with a key/value cache (inference only) ---

    def initial_cache(self, batch_size, cache_length, encoder_sequence=None):
        """The caches `call_with_cache` starts from.

        Args:
            batch_size: int or scalar int tensor, B.
            cache_length: int, S, positions each self-attention cache holds
                (at least the number of decoding steps).
            encoder_sequence: optional `(B, T_e, D)` encoder output; needed
                iff the layers have cross-attention.

        Returns:
            `(self_attention_cache, cross_attention_cache)`: one
            `(key, value)` pair per layer each, tuples; self-attention pairs
            are zeros `(B, h, S, d_k)`, cross-attention pairs the projected
            encoder output `(B, h, T_e, d_k)` (None without an encoder).
        """
        self_cache = tuple(
            layer.initial_self_attention_cache(batch_size, cache_length)
            for layer in self.decoder_layers
        )
        cross_cache = None
        if encoder_sequence is not None:
            cross_cache = tuple(
                layer.compute_cross_attention_cache(encoder_sequence)
                for layer in self.decoder_layers
            )
        return self_cache, cross_cache

    def call_with_cache(
        self,
        decoder_sequence,
        self_attention_cache,
        cache_index,
        cross_attention_cache=None,
        encoder_padding_mask=None,
    ):
        """Runs the stack on the single position `cache_index` (no dropout).

        Args:
            decoder_sequence: `(B, 1, D)` embedded token at `cache_index`.
            self_attention_cache, cross_attention_cache: per-layer tuples of
                `(key, value)` pairs, as from `initial_cache`.
            cache_index: int or scalar int tensor, the position decoded.
            encoder_padding_mask: optional `(B, T_e)`, 1/True for real tokens.

        Returns:
            `(output, self_attention_cache)`: `(B, 1, D)` (row `cache_index`
            of `call` on the prefix) and the updated self-attention caches.
        """
        x = decoder_sequence  # (B, 1, D)
        new_cache = []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_cache = layer.call_with_cache(
                x,
                self_attention_cache[i],
                cache_index,
                cross_attention_cache=(
                    None if cross_attention_cache is None else cross_attention_cache[i]
                ),
                encoder_padding_mask=encoder_padding_mask,
            )
            new_cache.append(layer_cache)
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
        return x, tuple(new_cache)  # (B, 1, D)

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return decoder_sequence_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "activation": keras.activations.serialize(self.activation),
                "norm_first": self.norm_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

