"""The span head's masking layer, loss and accuracy.

The model maps each window (NW, L) to start and end logits (NW, L, 2); the
positions where no span may start or end (question, [SEP], padding) get
`MASKED` so that the softmax over a window's positions ignores them.
Targets are (NW, 2) int: the packed positions of the answer's first and last
subword, (0, 0) = [CLS] when the window does not hold the answer.
"""

from __future__ import annotations

import keras
import tensorflow as tf

MASKED = -1e9  # logit of a position that cannot start or end a span (finite, so sums stay finite)


@keras.saving.register_keras_serializable(package="tfsft")
class MaskedSpanLogits(keras.layers.Layer):
    """(NW, L, 2) logits and (NW, L) answer mask → logits, `MASKED` where the mask is 0."""

    def call(self, logits, answer_mask):
        allowed = tf.expand_dims(tf.cast(answer_mask, tf.bool), -1)
        return tf.where(allowed, tf.cast(logits, tf.float32), MASKED)


@keras.saving.register_keras_serializable(package="tfsft")
class SpanCrossentropy(keras.losses.Loss):
    """loss = ½ (CE(start, logits[..., 0]) + CE(end, logits[..., 1])), per window."""

    def __init__(self, name="span_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        start = keras.losses.sparse_categorical_crossentropy(y_true[:, 0], y_pred[..., 0], from_logits=True)
        end = keras.losses.sparse_categorical_crossentropy(y_true[:, 1], y_pred[..., 1], from_logits=True)
        return (start + end) / 2.0


@keras.saving.register_keras_serializable(package="tfsft")
class SpanAccuracy(keras.metrics.MeanMetricWrapper):
    """Fraction of windows whose argmax start and argmax end are both the target's."""

    def __init__(self, name="span_accuracy", **kwargs):
        super().__init__(span_hits, name=name, **kwargs)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def span_hits(y_true, y_pred):
    predicted = tf.argmax(y_pred, axis=1, output_type=tf.int32)  # (NW, 2)
    return tf.cast(tf.reduce_all(predicted == tf.cast(y_true, tf.int32), axis=-1), tf.float32)
