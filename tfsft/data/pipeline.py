"""tf.data pipelines: in-graph tokenization, length bucketing, per-batch padding.

The same `TextEncoder` runs inside tf.data during training and inside the
exported SavedModel at serving time, so both see identical token ids.

Training pipeline (`training_dataset`)::

    strings ─batch(1024)→ tokenize+pack ─unbatch→ cache ─shuffle(seed)→ repeat
        ─bucket_by_sequence_length(pad to the longest in each batch)→ prefetch

Padding each batch only to its own longest example (instead of to
`sequence_length`) is what makes short-text fine-tuning fast: SST-2 averages
about 13 word pieces, so a fixed length of 128 would spend ~90 % of the compute
on padding.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import no_convert_scope

from tfsft.models.backbones import special_token_ids

AUTOTUNE = tf.data.AUTOTUNE
TOKENIZE_BATCH = 1024


class TextEncoder(keras.layers.Layer):
    """Strings → packed, padded BERT-style inputs: `[CLS] a [SEP] (b [SEP])`.

    Args:
        tokenizer: a KerasHub WordPiece tokenizer.
        sequence_length: the longest packed sequence; longer inputs are
            truncated round-robin across the two segments.

    Call args:
        text: string tensor (B,).
        text_pair: optional string tensor (B,).

    Returns:
        (features, truncated): `features` holds `token_ids`, `segment_ids` and
        `padding_mask`, each (B, L) int32 with L the longest packed example in
        the batch (≤ `sequence_length`); `truncated` is a (B,) bool tensor.
    """

    def __init__(self, tokenizer, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        # Always the TF Text path (KerasHub runs pure Python in eager mode), so eager
        # calls, tf.data and the SavedModel produce identical ids.
        self.tokenizer._allow_python_workflow = False
        self.sequence_length = sequence_length
        ids = special_token_ids(tokenizer)
        self.pad_id = ids["pad"]
        self.packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=sequence_length,
            start_value=ids["start"],
            end_value=ids["end"],
            pad_value=ids["pad"],
            truncate="round_robin",
            _allow_python_workflow=False,
        )

    def __call__(self, text, text_pair=None, **kwargs):
        # Accept Python lists and NumPy arrays of strings as well as tensors.
        text = tf.convert_to_tensor(text, tf.string)
        if text_pair is None:
            return super().__call__(text, **kwargs)
        return super().__call__(text, tf.convert_to_tensor(text_pair, tf.string), **kwargs)

    def call(self, text, text_pair=None):
        texts = [text] if text_pair is None else [text, text_pair]
        with no_convert_scope():  # keep KerasHub from turning eager outputs into Python lists
            segments = [self.tokenizer(tf.convert_to_tensor(t, tf.string)) for t in texts]
            token_ids, segment_ids = self.packer(tuple(segments))  # (B, sequence_length)
        raw_length = sum(s.row_lengths() for s in segments) + len(segments) + 1  # + [CLS] and [SEP]s
        length = tf.minimum(raw_length, self.sequence_length)
        max_length = tf.reduce_max(tf.concat([length, [1]], 0))
        token_ids = tf.cast(token_ids[:, :max_length], tf.int32)
        segment_ids = tf.cast(segment_ids[:, :max_length], tf.int32)
        padding_mask = tf.sequence_mask(length, max_length, dtype=tf.int32)
        features = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        return features, raw_length > self.sequence_length


@dataclass
class EncodedSplit:
    """A tokenized split: per-example dataset plus statistics."""

    dataset: tf.data.Dataset  # ({token_ids, segment_ids, padding_mask} (L,), target[, weight])
    size: int
    truncated: int
    mean_tokens: float


def encode_examples(
    encoder: TextEncoder,
    texts: list[str],
    pairs: Optional[list[str]],
    targets: Optional[np.ndarray],
    weights: Optional[np.ndarray] = None,
) -> EncodedSplit:
    """Tokenizes a split in-graph (batched) and caches the result in memory.

    One pass over the data fills the cache and counts truncated examples; the
    returned dataset yields variable-length examples from that cache.
    """
    columns = [tf.constant(texts)] + ([tf.constant(pairs)] if pairs is not None else [])
    extra = [t for t in (targets, weights) if t is not None]
    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns + extra)).batch(TOKENIZE_BATCH)

    def tokenize(*batch):
        text, rest = batch[0], list(batch[1:])
        pair = rest.pop(0) if pairs is not None else None
        features, truncated = encoder(text, pair)
        return (features, *rest), truncated

    def trim(example):  # one padded example → its real length
        features, *rest = example
        length = tf.reduce_sum(features["padding_mask"])
        features = {k: v[:length] for k, v in features.items()}
        return (features, *rest) if rest else features

    tokenized = dataset.map(tokenize, num_parallel_calls=AUTOTUNE).cache()
    truncated = 0
    total_tokens = 0
    for (features, *_), flags in tokenized:
        truncated += int(tf.reduce_sum(tf.cast(flags, tf.int32)))
        total_tokens += int(tf.reduce_sum(features["padding_mask"]))
    examples = tokenized.map(lambda example, _: example).unbatch().map(lambda *e: trim(e))
    return EncodedSplit(examples, len(texts), truncated, total_tokens / max(len(texts), 1))


def _padding_values(pad_id: int, element_spec):
    """`pad_id` for `*token_ids` features, 0 for masks, labels and weights."""
    features_spec = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    values = {k: tf.constant(pad_id if k.endswith("token_ids") else 0, s.dtype) for k, s in features_spec.items()}
    if not isinstance(element_spec, tuple):
        return values
    return (values, *[tf.constant(0, s.dtype) for s in element_spec[1:]])


def _length(*example):
    """The longest `*token_ids` feature of an example (what its batch pads to)."""
    lengths = [tf.shape(v)[0] for k, v in example[0].items() if k.endswith("token_ids")]
    return tf.reduce_max(tf.stack(lengths))


def static_lengths(bucket_boundaries: list[int], sequence_length: int) -> list[int]:
    """The lengths fixed-shape batches are padded to: the boundaries below `sequence_length`, then it."""
    return [b for b in bucket_boundaries if b < sequence_length] + [sequence_length]


def training_dataset(
    split: EncodedSplit,
    *,
    pad_id: int,
    batch_size: int,
    bucket_boundaries: list[int],
    sequence_length: int,
    seed: int,
    shuffle_buffer: int,
    skip_batches: int = 0,
    batch_transform=None,
    static_shapes: bool = False,
) -> tf.data.Dataset:
    """Shuffled, repeated batches, each padded to its own longest example.

    `skip_batches` resumes the exact batch order of an interrupted run (the
    seeded shuffle makes the order reproducible). `batch_transform`, when
    given, maps each padded batch (e.g. dynamic masking for masked-LM).
    `static_shapes` pads each batch to its bucket's boundary instead, so XLA
    (`jit_compile`) and TPUs compile one program per bucket, not per length.
    """
    boundaries = (static_lengths(bucket_boundaries, sequence_length) if static_shapes
                  else [b for b in bucket_boundaries if b < sequence_length])

    @tf.autograph.experimental.do_not_convert
    def batches(_):
        shuffled = split.dataset.shuffle(min(shuffle_buffer, split.size), seed=seed, reshuffle_each_iteration=True)
        return shuffled.repeat().bucket_by_sequence_length(
            element_length_func=_length,
            bucket_boundaries=[b + 1 for b in boundaries],  # bucket i holds lengths ≤ boundaries[i]
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            padding_values=_padding_values(pad_id, split.dataset.element_spec),
            pad_to_bucket_boundary=static_shapes,
            drop_remainder=True,
        )

    # Built anew for every iterator, so that every iterator starts the same seeded order: one shuffle
    # shared by all iterators reshuffles for each, and Keras opens one of its own before it trains a
    # distributed model (training would then start from the second order, unlike on one device).
    dataset = tf.data.Dataset.from_tensors(0).flat_map(batches)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    if batch_transform is not None:
        dataset = dataset.map(batch_transform, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


EVAL_BUCKETS = [8, 16, 24, 32, 40, 48, 56, 64, 96, 128, 192, 256, 384]  # lengths that share a batch: ≤ 8, 9-16, ...


def _similar_length_batches(dataset: tf.data.Dataset, pad_id: int, batch_size: int,
                            lengths: Optional[list[int]] = None) -> tf.data.Dataset:
    """Every example once, in batches of examples of similar length, each padded to its own longest
    (or, given `lengths`, to the first of them that fits: fixed shapes)."""
    boundaries = lengths or EVAL_BUCKETS
    return dataset.bucket_by_sequence_length(
        element_length_func=_length,
        bucket_boundaries=[b + 1 for b in boundaries],
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padding_values=_padding_values(pad_id, dataset.element_spec),
        pad_to_bucket_boundary=lengths is not None,
    )


def evaluation_dataset(split: EncodedSplit, *, pad_id: int, batch_size: int,
                       lengths: Optional[list[int]] = None) -> tf.data.Dataset:
    """Batches of examples of similar length (little padding), *not* in the split's order.

    For whatever does not depend on order (Keras' validation metrics, token
    statistics); `predict_split` gives per-example outputs in order. `lengths`
    (`static_lengths`) pads every batch to one of a few fixed lengths (XLA, TPUs).
    """
    return _similar_length_batches(split.dataset, pad_id, batch_size, lengths).prefetch(AUTOTUNE)


_FORWARD_PASSES = weakref.WeakKeyDictionary()  # model → (input spec, its traced inference call)


def _forward_pass(model: keras.Model, spec: dict) -> tf.types.experimental.GenericFunction:
    """`model(x, training=False)` as one tf.function per model and input spec, traced once, not per call
    (evaluation after training, the robustness report's perturbed copies). It holds the model weakly."""
    cached = _FORWARD_PASSES.get(model)
    if cached is not None and cached[0] == spec:
        return cached[1]
    held = weakref.ref(model)
    forward = tf.function(lambda x: held()(x, training=False), input_signature=[spec])
    _FORWARD_PASSES[model] = (spec, forward)
    return forward


def predict_split(model: keras.Model, split: EncodedSplit, *, pad_id: int, batch_size: int) -> np.ndarray:
    """The model's output for every example of `split`, in the split's order.

    Forward passes only: examples of similar length share a batch, and one
    traced function takes every batch shape. (`model.predict` on batches in
    file order padded SST-2 dev to twice its tokens and traced per length: it
    ran slower than training, see benchmarks/bench_tfsft_evaluate.py.)
    """
    features = split.dataset.map(lambda x, *_: x)
    names = list(model.input)
    spec = {k: tf.TensorSpec([None, None], features.element_spec[k].dtype, name=k) for k in names}
    forward = _forward_pass(model, spec)
    batches = _similar_length_batches(features.enumerate().map(lambda i, x: (x, i)), pad_id, batch_size)
    outputs, order = [], []
    for x, index in batches.prefetch(AUTOTUNE):
        outputs.append(forward({k: x[k] for k in names}).numpy())
        order.append(index.numpy())
    ordered = np.empty_like(np.concatenate(outputs))
    ordered[np.concatenate(order)] = np.concatenate(outputs)
    return ordered
