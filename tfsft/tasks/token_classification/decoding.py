"""In-graph pieces of NER serving and scoring: IOB2 chunks, Viterbi decoding, loss and metrics.

Chunks follow the CoNLL evaluation script (conlleval; seqeval's default mode):
a chunk of type X starts at B-X, or at an I-X that does not continue an X chunk
(after O, after another type, or first in the sentence), and runs over the
following I-X words. All functions are TensorFlow ops, so they run inside the
SavedModel and inside a Keras metric.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def iob2_chunks(tag_ids: tf.RaggedTensor, label_types: tf.Tensor, label_begins: tf.Tensor):
    """Chunks of IOB2 tag sequences, one row per sentence.

    Args:
        tag_ids: int ragged (B, [W]) label ids.
        label_types: (C,) int32, the entity type of each label (0 for O, 1..K).
        label_begins: (C,) bool, whether each label is a B- tag.

    Returns:
        `(is_start, end, kind)`, each (N,) over the N = ΣW words in row order:
        `is_start[i]` whether a chunk starts at word i; for such words `end[i]`
        is the flat index one past its last word and `kind[i]` its type (1..K).
    """
    flat = tf.cast(tag_ids.flat_values, tf.int32)
    kind = tf.gather(label_types, flat)  # (N,)
    begin = tf.gather(label_begins, flat)
    count = tf.size(flat, out_type=tf.int64)
    index = tf.range(count)
    row_first = index == tf.gather(tag_ids.row_starts(), tag_ids.value_rowids())
    previous = tf.where(row_first, 0, tf.concat([[0], kind[:-1]], 0))
    is_start = (kind > 0) & (begin | (previous != kind))
    # Every word with a type belongs to the chunk most recently started.
    chunk = tf.cumsum(tf.cast(is_start, tf.int64)) - 1
    inside = kind > 0
    chunk_end = tf.math.unsorted_segment_max(tf.boolean_mask(index + 1, inside), tf.boolean_mask(chunk, inside),
                                             tf.reduce_sum(tf.cast(is_start, tf.int64)))
    chunk_end = tf.concat([chunk_end, [0]], 0)  # one spare entry, so the gather below is valid with no chunks
    end = tf.where(is_start, tf.gather(chunk_end, tf.maximum(chunk, 0)), 0)
    return is_start, end, kind


def iob2_viterbi(log_probs: tf.RaggedTensor, label_types: tf.Tensor, label_begins: tf.Tensor) -> tf.RaggedTensor:
    """The most probable tag sequence per sentence that is valid IOB2.

    Maximises Σ_t log p_t(y_t) subject to: an I-X follows B-X or I-X (and
    never starts a sentence). Viterbi: s_t(c) = max_{c' allowed before c}
    s_{t-1}(c') + log p_t(c), then backtracking.

    Args:
        log_probs: float ragged (B, [W], C) per-word log-probabilities.
        label_types: (C,) int32 entity type of each label (0 for O).
        label_begins: (C,) bool, whether each label is a B- tag.

    Returns:
        int32 ragged (B, [W]) label ids.
    """
    inside = (label_types > 0) & ~label_begins  # I- labels
    same_type = tf.equal(label_types[:, None], label_types[None, :]) & (label_types[:, None] > 0)
    allowed = ~inside[None, :] | same_type  # (C_prev, C): I-X only after B-X / I-X
    big = tf.constant(-1e9, tf.float32)
    penalty = tf.where(allowed, 0.0, big)
    lengths = log_probs.row_lengths()
    scores = tf.cast(log_probs.to_tensor(0.0), tf.float32)  # (B, W, C)
    # W ≥ 2, so the scans below have at least one step: in a graph, tf.scan over
    # no elements fails (batches of one-word or empty sentences). Padded steps
    # lie past every sentence's end and change nothing.
    scores = tf.pad(scores, [[0, 0], [0, tf.maximum(2 - tf.shape(scores)[1], 0)], [0, 0]])
    num_labels = tf.shape(penalty)[0]
    first = scores[:, 0, :] + tf.where(inside, big, 0.0)  # (B, C)
    steps = tf.range(1, tf.shape(scores)[1], dtype=tf.int64)
    identity = tf.broadcast_to(tf.range(num_labels), tf.shape(first))

    def forward(carry, t):
        score, _ = carry
        candidates = score[:, :, None] + penalty[None]  # (B, C_prev, C)
        new = tf.reduce_max(candidates, axis=1) + tf.gather(scores, t, axis=1)
        back = tf.argmax(candidates, axis=1, output_type=tf.int32)  # (B, C)
        valid = (t < lengths)[:, None]  # past a sentence's end: keep the score, point to itself
        return tf.where(valid, new, score), tf.where(valid, back, identity)

    final, backpointers = tf.scan(forward, steps, initializer=(first, identity))  # (W-1, B, C) each
    last = tf.argmax(tf.concat([first[None], final], 0)[-1], axis=-1, output_type=tf.int32)  # (B,)

    def backward(tag, back):  # tag at t → tag at t-1
        return tf.gather(back, tag, batch_dims=1)

    earlier = tf.scan(backward, backpointers, initializer=last, reverse=True)  # (W-1, B): tags 0..W-2
    tags = tf.transpose(tf.concat([earlier, last[None]], 0))  # (B, W)
    return tf.RaggedTensor.from_tensor(tags, lengths=lengths)


def label_tables(labels: list[str]) -> tuple[list[str], list[int], list[bool]]:
    """Entity types (sorted) and, per IOB2 label, its type number (0 = O) and B- flag."""
    types = sorted({label[2:] for label in labels if label != "O"})
    number = {kind: i + 1 for i, kind in enumerate(types)}
    return types, [number.get(label[2:], 0) if label != "O" else 0 for label in labels], [
        label.startswith("B-") for label in labels]


def _labelled(y_true, sample_weight):
    """Targets are label id + 1, 0 where a position has no label: (ids, mask), each (B, L)."""
    y_true = tf.cast(y_true, tf.int32)
    mask = y_true > 0
    if sample_weight is not None:
        mask &= tf.reshape(sample_weight, tf.shape(y_true)) > 0
    return tf.maximum(y_true - 1, 0), mask


@keras.saving.register_keras_serializable(package="tfsft")
class TagCrossentropy(keras.losses.Loss):
    """Cross-entropy of the labelled positions, averaged over them.

    loss = Σ_t w_t·CE(y_t - 1, logits_t) / Σ_t w_t, with w the sample weight
    times [y_t > 0] (targets are label id + 1; 0 marks special tokens,
    padding and subwords left out of the loss).
    """

    def __init__(self, name="tag_crossentropy", **kwargs):
        kwargs.setdefault("reduction", "mean_with_sample_weight")
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels, mask = _labelled(y_true, None)
        loss = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)  # (B, L)
        return loss * tf.cast(mask, loss.dtype)


@keras.saving.register_keras_serializable(package="tfsft")
class TagAccuracy(keras.metrics.Metric):
    """Accuracy of argmax tags over the labelled positions (targets: label id + 1, 0 = none).

    Keras calls compiled `metrics` without sample weights, so the positions
    that count are read from the targets themselves.
    """

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, mask = _labelled(y_true, sample_weight)
        hit = mask & (tf.argmax(y_pred, axis=-1, output_type=tf.int32) == labels)
        self.correct.assign_add(tf.reduce_sum(tf.cast(hit, self.dtype)))
        self.total.assign_add(tf.reduce_sum(tf.cast(mask, self.dtype)))

    def result(self):
        return self.correct / tf.maximum(self.total, 1.0)


@keras.saving.register_keras_serializable(package="tfsft")
class EntityF1(keras.metrics.Metric):
    """Micro entity-level F1 over the labelled positions of each window.

    F1 = 2·TP / (#predicted + #true chunks); a predicted chunk counts as a true
    positive when a true chunk has the same first word, last word and type.
    Targets are label id + 1 (0 = no label). With the evaluation targets of
    token classification (one position per word) this is the CoNLL F1 of the
    words, except that a chunk crossing the boundary between two windows of a
    sentence longer than the model counts as two (the `evaluate` scores, from
    seqeval on merged sentences, have no such exception).

    Args:
        labels: the IOB2 label list, in class-id order.
    """

    def __init__(self, labels: list[str], name: str = "entity_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.labels = list(labels)
        _, types, begins = label_tables(self.labels)
        self._types = tf.constant(types, tf.int32)
        self._begins = tf.constant(begins, tf.bool)
        self.true_positives = self.add_variable((), initializer="zeros", name="true_positives")
        self.predicted = self.add_variable((), initializer="zeros", name="predicted")
        self.actual = self.add_variable((), initializer="zeros", name="actual")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, mask = _labelled(y_true, sample_weight)  # (B, L)
        y_pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)  # (B, L, C) → (B, L)
        true_start, true_end, true_kind = iob2_chunks(tf.ragged.boolean_mask(labels, mask), self._types, self._begins)
        pred_start, pred_end, pred_kind = iob2_chunks(tf.ragged.boolean_mask(y_pred, mask), self._types, self._begins)
        hit = true_start & pred_start & (true_end == pred_end) & (true_kind == pred_kind)
        count = lambda flags: tf.reduce_sum(tf.cast(flags, self.dtype))
        self.true_positives.assign_add(count(hit))
        self.predicted.assign_add(count(pred_start))
        self.actual.assign_add(count(true_start))

    def result(self):
        return 2.0 * self.true_positives / tf.maximum(self.predicted + self.actual, 1.0)

    def get_config(self):
        return {**super().get_config(), "labels": self.labels}
