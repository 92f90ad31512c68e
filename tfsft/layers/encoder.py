"""Transformer encoder layer and encoder stack (Vaswani et al., 2017, §3.1).

Each layer has two sublayers, self-attention and a position-wise FFN, each
wrapped as  LayerNorm(x + Dropout(Sublayer(x)))  (post-LN, the paper), or
x + Dropout(Sublayer(LayerNorm(x)))  (pre-LN, `norm_first=True`).
"""

import keras

from tfsft.layers._utils import check_rate
from tfsft.layers._utils import clone_initializer
from tfsft.layers.attention import MultiHeadAttention
from tfsft.layers.attention import make_attention_mask
from tfsft.layers.feed_forward import PositionwiseFeedForward


def head_dim(hidden_dim, num_heads):
    """Returns d_k = hidden_dim / num_heads, raising if it is not an integer."""
    if hidden_dim % num_heads != 0:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads` (d_k = "
            "hidden_dim / num_heads). "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    return hidden_dim // num_heads


def _check_positive_int(name, value):
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value}")


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerEncoderLayer(keras.layers.Layer):
    """One encoder layer: self-attention + FFN, residuals, dropout, LayerNorm.

    Post-LN (paper, default):  x = LN(x + Drop(MHA(x))); x = LN(x + Drop(FFN(x)))
    Pre-LN (`norm_first=True`): x = x + Drop(MHA(LN(x))); x = x + Drop(FFN(LN(x)))

    `hidden_dim` (= d_model) is taken from the input's last dimension and must
    be divisible by `num_heads`. Shapes: `(B, T, D) -> (B, T, D)`.

    Args:
        num_heads: int, attention heads `h`.
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
        inputs: `(B, T, D)` tensor.
        padding_mask: optional `(B, T)`, 1/True for real tokens.
        attention_mask: optional, broadcastable to `(B, T, T)`.
        training: bool, enables dropout.

    Example:
    ```python
    layer = TransformerEncoderLayer(num_heads=2, intermediate_dim=64)
    y = layer(keras.random.normal((2, 5, 32)), padding_mask=np.ones((2, 5)))
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

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        key_dim = head_dim(hidden_dim, self.num_heads)
        self.self_attention = MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            dropout=self.attention_dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.self_attention.build(inputs_shape)
        self.self_attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="self_attention_dropout"
        )
        self.self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="self_attention_layer_norm",
        )
        self.self_attention_layer_norm.build(inputs_shape)
        self.feed_forward = PositionwiseFeedForward(
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.feed_forward.build(inputs_shape)
        self.feed_forward_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="feed_forward_dropout"
        )
        self.feed_forward_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="feed_forward_layer_norm",
        )
        self.feed_forward_layer_norm.build(inputs_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None):
        mask = make_attention_mask(
            padding_mask=padding_mask, attention_mask=attention_mask
        )  # (B, 1|T, T) or None
        x = inputs  # (B, T, D)

        # Sublayer 1: multi-head self-attention.
        residual = x
        if self.norm_first:
            x = self.self_attention_layer_norm(x)
        x = self.self_attention(x, attention_mask=mask, training=training)
        x = residual + self.self_attention_dropout(x, training=training)
        if not self.norm_first:
            x = self.self_attention_layer_norm(x)

        # Sublayer 2: position-wise feed-forward.
        residual = x
        if self.norm_first:
            x = self.feed_forward_layer_norm(x)
        x = self.feed_forward(x, training=training)
        x = residual + self.feed_forward_dropout(x, training=training)
        if not self.norm_first:
            x = self.feed_forward_layer_norm(x)
        return x  # (B, T, D)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

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
class TransformerEncoder(keras.layers.Layer):
    """A stack of `num_layers` `TransformerEncoderLayer`s.

    With `norm_first=True` a final LayerNorm is applied to the stack's output
    (pre-LN layers leave the residual stream un-normalized).
    Shapes: `(B, T, D) -> (B, T, D)`.

    Args:
        num_layers: int, number of layers N (paper: 6).
        num_heads, intermediate_dim, dropout, attention_dropout, activation,
        norm_first, layer_norm_epsilon, kernel_initializer, bias_initializer:
            as in `TransformerEncoderLayer`.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: `(B, T, D)` embedded tokens.
        padding_mask: optional `(B, T)`, 1/True for real tokens.
        attention_mask: optional, broadcastable to `(B, T, T)`.
        training: bool.

    Example:
    ```python
    encoder = TransformerEncoder(num_layers=2, num_heads=2, intermediate_dim=64)
    y = encoder(keras.random.normal((2, 5, 32)))  # (2, 5, 32)
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
        self.encoder_layers = [
            TransformerEncoderLayer(
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
                name=f"encoder_layer_{i}",
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

    def build(self, inputs_shape):
        for layer in self.encoder_layers:
            layer.build(inputs_shape)
        if self.final_layer_norm is not None:
            self.final_layer_norm.build(inputs_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None):
        # Combine the masks once, then share them across layers.
        mask = make_attention_mask(
            padding_mask=padding_mask, attention_mask=attention_mask
        )  # (B, 1|T, T) or None
        x = inputs  # (B, T, D)
        for layer in self.encoder_layers:
            x = layer(x, attention_mask=mask, training=training)
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
        return x  # (B, T, D)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

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
