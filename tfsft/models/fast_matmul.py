"""A faster TensorFlow path for the projection einsums of `keras.layers.EinsumDense`.

Keras' multi-head attention projects with einsums such as `abc,cde->abde`
(x: (B, T, D) · W: (D, H, K) → (B, T, H, K)). On the TensorFlow backend these run
as a batched matmul that *broadcasts* W over the batch, so the weight gradient is
computed as B separate (D × HK) products and then summed: on 2 CPU cores that was
about a third of a MiniLM fine-tuning step.

When the contracted letters are the trailing axes of x and the leading axes of W,
the einsum is one plain matmul of x reshaped to (B·T, D) with W reshaped to
(D, HK); its gradients are two plain matmuls. `install()` routes exactly those
einsums through that path and leaves every other einsum to Keras. The result is
mathematically identical (tests/models/test_fast_matmul.py checks values and
gradients against `tf.einsum`).
"""

from __future__ import annotations

import functools

import tensorflow as tf


def _projection_split(subscripts: str):
    """(#contracted axes) if `subscripts` is x[..., c] · w[c, ...] → out[..., ...], else None."""
    if "->" not in subscripts or "." in subscripts:
        return None
    inputs, output = subscripts.replace(" ", "").split("->")
    parts = inputs.split(",")
    if len(parts) != 2:
        return None
    x, w = parts
    shared = [c for c in x if c in w]
    k = len(shared)
    if k == 0 or x[len(x) - k:] != w[:k] or "".join(shared) != w[:k]:
        return None
    if output != x[: len(x) - k] + w[k:] or len(set(x + w)) != len(x) + len(w) - k:
        return None
    return k


def projection_matmul(x: tf.Tensor, w: tf.Tensor, contracted: int) -> tf.Tensor:
    """x[..., c₁..cₖ] · w[c₁..cₖ, ...] as one 2-D matmul (shapes: see module doc)."""
    batch_shape = tf.shape(x)[: x.shape.rank - contracted]
    depth = 1
    for size in w.shape[:contracted]:
        depth *= size
    out_tail = w.shape[contracted:]
    flat = tf.matmul(tf.reshape(x, [-1, depth]), tf.reshape(w, [depth, -1]))  # (B·T, prod(out_tail))
    return tf.reshape(flat, tf.concat([batch_shape, out_tail], axis=0))


def install() -> None:
    """Routes Keras' TensorFlow `einsum` projections through `projection_matmul` (idempotent)."""
    from keras.src.backend.tensorflow import numpy as tf_numpy

    original = tf_numpy.einsum
    if getattr(original, "_tfsft_fast", False):
        return

    @functools.wraps(original)
    def einsum(subscripts, *operands, **kwargs):
        contracted = _projection_split(subscripts) if len(operands) == 2 and not kwargs else None
        if contracted is not None:
            x, w = (tf.convert_to_tensor(o) for o in operands)
            if (x.dtype == w.dtype and x.dtype.is_floating and w.shape[:contracted].is_fully_defined()
                    and w.shape[contracted:].is_fully_defined() and x.shape.rank is not None):
                return projection_matmul(x, w, contracted)
        return original(subscripts, *operands, **kwargs)

    einsum._tfsft_fast = True
    tf_numpy.einsum = einsum
