"""Position-wise feed-forward network.

Vaswani et al., 2017, eq. (2):  FFN(x) = max(0, x W₁ + b₁) W₂ + b₂
"""

import keras

from tfsft.layers._utils import check_rate
from tfsft.layers._utils import clone_initializer


@keras.saving.register_keras_serializable(package="tfsft")
class PositionwiseFeedForward(keras.layers.Layer):
    """Two-layer MLP applied to every position independently.

    FFN(x) = act(x W₁ + b₁) W₂ + b₂, with act = ReLU in the paper
    (`activation="gelu"` gives the BERT/GPT variant). Shapes:
    `(B, T, D) -> (B, T, intermediate_dim) -> (B, T, output_dim or D)`.

    Args:
        intermediate_dim: int, inner size `d_ff` (2048 in the paper's base).
        output_dim: int, output size. Defaults to the input's last dim.
        activation: str or callable, inner activation. Defaults to `"relu"`.
        dropout: float in [0, 1), dropout on the inner activations (the
            Transformer layers in this package pass 0 here and apply the
            paper's residual dropout on the FFN output instead).
        use_bias: bool, whether the two projections have biases.
        kernel_initializer: initializer for W₁ and W₂.
        bias_initializer: initializer for b₁ and b₂.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:
    ```python
    ffn = PositionwiseFeedForward(intermediate_dim=64, activation="gelu")
    y = ffn(keras.random.normal((2, 5, 16)))  # (2, 5, 16)
    ```
    """

    def __init__(
        self,
        intermediate_dim,
        output_dim=None,
        activation="relu",
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(intermediate_dim, int) or intermediate_dim <= 0:
            raise ValueError(
                "`intermediate_dim` must be a positive int. "
                f"Received: intermediate_dim={intermediate_dim}"
            )
        check_rate("dropout", dropout)
        self.intermediate_dim = intermediate_dim
        self.output_dim = output_dim
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.intermediate_dense = keras.layers.Dense(  # W₁, b₁
            self.intermediate_dim,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="intermediate_dense",
        )
        self.intermediate_dense.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="intermediate_dropout"
        )
        self.output_dense = keras.layers.Dense(  # W₂, b₂
            self.output_dim or input_shape[-1],
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="output_dense",
        )
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, inputs, training=None):
        x = self.intermediate_dense(inputs)  # (B, T, d_ff), act applied
        x = self.dropout_layer(x, training=training)
        return self.output_dense(x)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "output_dim": self.output_dim,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
