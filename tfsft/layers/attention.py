"""Scaled dot-product attention and multi-head attention.

Vaswani et al., 2017, "Attention Is All You Need", §3.2:

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) · V
    MultiHead(Q, K, V) = Concat(head₁, …, head_h) · W^O,
        headᵢ = Attention(Q W^Q_i, K W^K_i, V W^V_i)

Mask convention used throughout `tfsft.layers`: a *padding mask* has shape
`(B, T)` and is 1/True for real tokens; an *attention mask* is broadcastable
to `(B, T_q, T_k)` and is 1/True where query `i` may attend to key `j`.
"""

import math

import keras
from keras import ops

from tfsft.layers._utils import check_rate
from tfsft.layers._utils import clone_initializer

# Masked logits are replaced by this value. The logits are always cast to
# float32 before masking (see `ScaledDotProductAttention.call`), so -1e9 is
# representable and safe even when the layer computes in bfloat16/float16
# (float16's max is 65504, so -1e9 would overflow to -inf there).
MASK_VALUE = -1e9


def compute_causal_mask(query_length, key_length=None):
    """Lower-triangular "may attend" mask.

    Query position `i` may attend to key position `j` iff
    `j <= i + (key_length - query_length)`, i.e. the last query is aligned
    with the last key (this also covers queries that are the *suffix* of the
    keys, as in step-by-step decoding).

    Args:
        query_length: int or scalar int tensor, `T_q`.
        key_length: int or scalar int tensor, `T_k`. Defaults to `T_q`.

    Returns:
        A bool tensor of shape `(T_q, T_k)`.

    Example:
    >>> compute_causal_mask(3)  # doctest: +SKIP
    [[ True, False, False],
     [ True,  True, False],
     [ True,  True,  True]]
    """
    if key_length is None:
        key_length = query_length
    row = ops.expand_dims(ops.arange(query_length, dtype="int32"), 1)  # (T_q, 1)
    col = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)  # (1, T_k)
    offset = ops.cast(key_length, "int32") - ops.cast(query_length, "int32")
    return ops.greater_equal(row + offset, col)  # (T_q, T_k)


def make_attention_mask(
    padding_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    query_length=None,
    key_length=None,
):
    """Combines a key padding mask, an attention mask and a causal mask.

    The result is the logical AND of all the masks given.

    Args:
        padding_mask: optional `(B, T_k)` tensor, 1/True for real key tokens.
            Padded *keys* are hidden from every query (padded *queries* still
            produce an output, which callers ignore).
        attention_mask: optional tensor broadcastable to `(B, T_q, T_k)`,
            1/True where attention is allowed.
        use_causal_mask: bool. If True, AND with `compute_causal_mask`.
        query_length: `T_q`; required when `use_causal_mask=True`.
        key_length: `T_k`; defaults to `query_length`.

    Returns:
        A bool tensor broadcastable to `(B, T_q, T_k)`, or `None` if no mask
        was requested.
    """
    mask = None
    if padding_mask is not None:
        mask = ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)  # (B, 1, T_k)
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")  # (B, T_q, T_k)
        mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
    if use_causal_mask:
        if query_length is None:
            raise ValueError(
                "`query_length` is required when `use_causal_mask=True`. "
                f"Received: query_length={query_length}"
            )
        causal = compute_causal_mask(query_length, key_length)  # (T_q, T_k)
        causal = ops.expand_dims(causal, 0)  # (1, T_q, T_k)
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


@keras.saving.register_keras_serializable(package="tfsft")
class ScaledDotProductAttention(keras.layers.Layer):
    """Scaled dot-product attention: softmax(Q Kᵀ / √d_k) · V.

    Vaswani et al., 2017, eq. (1). The layer has no weights. Any number of
    leading batch dimensions is supported, e.g. `(B, T, d)` or, for
    multi-head attention, `(B, H, T, d)`.

    The logits are cast to float32 before masking and softmax, so the layer is
    numerically safe under `mixed_bfloat16` / `mixed_float16`; the attention
    weights are cast back to the compute dtype before multiplying `V`.

    Args:
        dropout: float in [0, 1). Dropout applied to the attention weights
            during training (not in the paper; 0 by default).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        query: `(..., T_q, d_k)` tensor.
        key: `(..., T_k, d_k)` tensor.
        value: `(..., T_k, d_v)` tensor.
        attention_mask: optional, broadcastable to `(B, T_q, T_k)`, 1/True
            where attention is allowed. It is broadcast over any head axis.
        use_causal_mask: bool, AND the mask with a causal mask.
        return_attention_scores: bool, also return the attention weights
            `(..., T_q, T_k)` (after softmax, before dropout).
        training: bool, enables dropout.

    Returns:
        `(..., T_q, d_v)` tensor, or a tuple `(output, weights)`.

    Example:
    ```python
    q = k = v = keras.random.normal((2, 5, 16))
    out, w = ScaledDotProductAttention()(
        q, k, v, use_causal_mask=True, return_attention_scores=True
    )  # out: (2, 5, 16), w: (2, 5, 5)
    ```
    """

    def __init__(self, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        check_rate("dropout", dropout)
        self.dropout = dropout
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="attention_dropout"
        )

    def call(
        self,
        query,
        key,
        value,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        depth = query.shape[-1]  # d_k (static)
        query = ops.multiply(query, ops.cast(1.0 / math.sqrt(depth), query.dtype))
        # (..., T_q, d_k) x (..., d_k, T_k) -> (..., T_q, T_k)
        logits = ops.matmul(query, ops.swapaxes(key, -1, -2))
        logits = ops.cast(logits, "float32")  # softmax always in float32

        mask = make_attention_mask(
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=ops.shape(query)[-2],
            key_length=ops.shape(key)[-2],
        )
        if mask is not None:
            # (B, T_q, T_k) -> (B, 1, T_q, T_k) for a head axis (or more).
            while len(mask.shape) < len(logits.shape):
                mask = ops.expand_dims(mask, axis=-3)
            logits = ops.where(mask, logits, MASK_VALUE)
        if logits.shape[-1] == 1:
            # A single key (e.g. the first decoding step): softmax is exactly 1
            # (and `ops.softmax` would warn about a size-1 axis).
            weights = ops.ones_like(logits)
        else:
            weights = ops.softmax(logits, axis=-1)  # (..., T_q, T_k), float32
        if mask is not None:
            # A fully masked row would otherwise be uniform; make it zero
            # (same convention as `keras.layers.Softmax`).
            weights = ops.where(mask, weights, 0.0)
        weights = ops.cast(weights, self.compute_dtype)

        dropped = self.dropout_layer(weights, training=training)
        output = ops.matmul(dropped, ops.cast(value, self.compute_dtype))  # (..., T_q, d_v)
        if return_attention_scores:
            return output, weights
        return output

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout})
        return config


@keras.saving.register_keras_serializable(package="tfsft")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with its own Q/K/V/O projections.

    MultiHead(Q, K, V) = Concat(head₁, …, head_h) · W^O with
    headᵢ = Attention(Q W^Q_i, K W^K_i, V W^V_i) (Vaswani et al., 2017, §3.2.2).

    The h per-head projections are stored as one `Dense` each
    (`W^Q ∈ R^{d_model × h·d_k}`), then reshaped to `(B, h, T, d_k)`; all heads
    are computed by one batched matmul (no loop over heads). Self-attention:
    call with `query` only; cross-attention: pass `value` (and optionally
    `key`, which defaults to `value`). The weights are numerically the same
    function as `keras.layers.MultiHeadAttention` (whose kernels are the
    same matrices reshaped to `(d_model, h, d_k)`).

    Args:
        num_heads: int, number of heads `h`.
        key_dim: int, size of each query/key head `d_k`.
        value_dim: int, size of each value head `d_v`. Defaults to `key_dim`.
        output_dim: int, size of the output. Defaults to the query's last dim.
        dropout: float, dropout on the attention weights.
        use_bias: bool, whether the projections have biases.
        kernel_initializer: initializer for the projection kernels.
        bias_initializer: initializer for the projection biases.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        query: `(B, T_q, D_q)`.
        value: `(B, T_k, D_v)`; defaults to `query` (self-attention).
        key: `(B, T_k, D_k)`; defaults to `value`.
        attention_mask: broadcastable to `(B, T_q, T_k)`, 1/True = attend.
        use_causal_mask: bool, additionally apply a causal mask.
        return_attention_scores: bool, also return `(B, h, T_q, T_k)` weights.
        training: bool, enables dropout.

    Returns:
        `(B, T_q, output_dim)`, or `(output, attention_weights)`.

    Example:
    ```python
    x = keras.random.normal((2, 7, 32))        # decoder states
    memory = keras.random.normal((2, 5, 32))   # encoder states
    mha = MultiHeadAttention(num_heads=4, key_dim=8)
    self_out = mha(x, use_causal_mask=True)    # (2, 7, 32)
    cross = MultiHeadAttention(num_heads=4, key_dim=8)
    out, w = cross(x, memory, return_attention_scores=True)  # w: (2, 4, 7, 5)
    ```
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        output_dim=None,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("num_heads", num_heads), ("key_dim", key_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{arg}` must be a positive int. Received: {arg}={value}"
                )
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim if value_dim is not None else key_dim
        self._value_dim_arg = value_dim
        self.output_dim = output_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        h = self.num_heads
        # Names "query"/"value" let KerasHub's `Backbone.enable_lora` find them.
        self.query_dense = self._dense(h * self.key_dim, "query")  # W^Q
        self.query_dense.build(query_shape)
        self.key_dense = self._dense(h * self.key_dim, "key")  # W^K
        self.key_dense.build(key_shape)
        self.value_dense = self._dense(h * self.value_dim, "value")  # W^V
        self.value_dense.build(value_shape)
        self.attention = ScaledDotProductAttention(
            dropout=self.dropout, dtype=self.dtype_policy, name="attention"
        )
        output_dim = self.output_dim or query_shape[-1]
        self.output_dense = self._dense(output_dim, "attention_output")  # W^O
        self.output_dense.build(tuple(query_shape[:-1]) + (h * self.value_dim,))
        self.built = True

    def _split_heads(self, x, depth):
        # (B, T, h·d) -> (B, T, h, d) -> (B, h, T, d)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], self.num_heads, depth))
        return ops.transpose(x, (0, 2, 1, 3))

    def _merge_heads(self, x):
        # (B, h, T, d) -> (B, T, h, d) -> (B, T, h·d)   (= Concat(head₁…head_h))
        x = ops.transpose(x, (0, 2, 1, 3))
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads * self.value_dim))

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        k, v = self.compute_key_value(query if value is None else value, key)  # (B, h, T_k, d_k|d_v)
        return self.attend(query, k, v, attention_mask=attention_mask, use_causal_mask=use_causal_mask,
                           return_attention_scores=return_attention_scores, training=training)

    def compute_key_value(self, value, key=None):
        """Projected, head-split keys and values, to reuse for many queries.

        Used by the decoder's key/value cache: cross-attention keys/values are
        computed once from the encoder output, self-attention ones one
        position at a time.

        Args:
            value: `(B, T_k, D_v)`.
            key: `(B, T_k, D_k)`; defaults to `value`.

        Returns:
            `(key, value)` of shapes `(B, h, T_k, d_k)` and `(B, h, T_k, d_v)`.
        """
        key = value if key is None else key
        k = self._split_heads(self.key_dense(key), self.key_dim)  # (B, h, T_k, d_k)
        v = self._split_heads(self.value_dense(value), self.value_dim)  # (B, h, T_k, d_v)
        return k, v

    def attend(self, query, key, value, attention_mask=None, use_causal_mask=False,
               return_attention_scores=False, training=None):
        """`call` with keys and values already projected (`compute_key_value`).

        Args:
            query: `(B, T_q, D_q)`, projected here.
            key: `(B, h, T_k, d_k)`; value: `(B, h, T_k, d_v)`.
            attention_mask: broadcastable to `(B, T_q, T_k)`, 1/True = attend.
            use_causal_mask, return_attention_scores, training: as in `call`.

        Returns:
            `(B, T_q, output_dim)`, and the `(B, h, T_q, T_k)` weights with
            `return_attention_scores`.
        """
        q = self._split_heads(self.query_dense(query), self.key_dim)  # (B, h, T_q, d_k)
        heads, weights = self.attention(
            q,
            key,
            value,
            attention_mask=attention_mask,  # (B, T_q, T_k) -> broadcast over h
            use_causal_mask=use_causal_mask,
            return_attention_scores=True,
            training=training,
        )  # heads: (B, h, T_q, d_v), weights: (B, h, T_q, T_k)
        output = self.output_dense(self._merge_heads(heads))  # (B, T_q, D)
        if return_attention_scores:
            return output, weights
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self._value_dim_arg,
                "output_dim": self.output_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
