"""A faster TensorFlow path for the projection einsums of `keras.layers.EinsumDense`.

Keras' multi-head attention projects with einsums such as `abc,cde->abde`
(x: (B, T, D) · W: (D, H, K) → (B, T, H, K)). On the TensorFlow backend these run
as a batched matmul that *broadcasts* W over the batch, so the weight gradient is
computed as B separate (D × HK) products and then summed: on 2 CPU cores that was
about a third of a MiniLM fine-tuning step.

When the contracted letters are the trailing axes of x and the leading axes of W,
the einsum is one plain matmul of x reshaped to (B·T, D) with W reshaped to
(D, HK); its gradients are two plain matmuls. Inside `with fast_projections():`
exactly those einsums take that path and every other einsum stays with Keras. The result is
mathematically identical (tests/models/test_fast_matmul.py checks values and
gradients against `tf.einsum`).
"""

from __future__ import annotations

import contextlib
import functools

import keras
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


def _keras_tensorflow_numpy():
    """Keras' TF-backend numpy module, whose `einsum` every `keras.ops.einsum` call reaches."""
    try:
        from keras.src.backend.tensorflow import numpy as tf_numpy
    except ImportError as e:
        raise RuntimeError(f"fast_projections: Keras {keras.__version__} has no keras.src.backend.tensorflow.numpy "
                           "(a Keras internal this speed-up relies on); update tfsft/models/fast_matmul.py") from e
    if not callable(getattr(tf_numpy, "einsum", None)):
        raise RuntimeError(f"fast_projections: Keras {keras.__version__}'s TF backend has no numpy.einsum; "
                           "update tfsft/models/fast_matmul.py")
    return tf_numpy


def _fast_einsum(original):
    @functools.wraps(original)
    def einsum(subscripts, *operands, **kwargs):
        contracted = _projection_split(subscripts) if len(operands) == 2 and not kwargs else None
        if contracted is not None:
            x, w = (tf.convert_to_tensor(o) for o in operands)
            if (x.dtype == w.dtype and x.dtype.is_floating and w.shape[:contracted].is_fully_defined()
                    and w.shape[contracted:].is_fully_defined() and x.shape.rank is not None):
                return projection_matmul(x, w, contracted)
        return original(subscripts, *operands, **kwargs)

    einsum.tfsft_original = original
    return einsum


@contextlib.contextmanager
def fast_projections():
    """Inside the block, Keras' TF `einsum` projections run as `projection_matmul`.

    Scoped to tfsft's own training, evaluation and export calls (also usable as
    a decorator); Keras' own `einsum` is restored on exit, so user code outside
    these calls is untouched. Graphs traced inside the block keep the fast path.
    Nested use is a no-op.
    """
    tf_numpy = _keras_tensorflow_numpy()
    original = tf_numpy.einsum
    if hasattr(original, "tfsft_original"):  # already inside a block
        yield
        return
    tf_numpy.einsum = _fast_einsum(original)
    try:
        yield
    finally:
        tf_numpy.einsum = original
