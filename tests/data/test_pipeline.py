"""tf.data pipeline: packing, truncation counts, per-batch padding, seeded order, resume skip."""

import keras_hub
import numpy as np
import pytest

from tfsft.data.pipeline import TextEncoder, encode_examples, evaluation_dataset, predict_split, training_dataset


@pytest.fixture(scope="module")
def encoder(tiny_vocab):
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(tiny_vocab), lowercase=True)
    return TextEncoder(tokenizer, sequence_length=12)


def test_packs_cls_text_sep_pair_sep_and_pads_to_longest_in_batch(encoder):
    features, truncated = encoder(np.array(["good film", "bad"]), np.array(["fun", "very long boring"]))
    ids = features["token_ids"].numpy()
    tok = encoder.tokenizer
    assert ids.shape == (2, 7)  # longest: [CLS] bad [SEP] very long boring [SEP]
    first = [tok.cls_token_id, tok.token_to_id("good"), tok.token_to_id("film"), tok.sep_token_id,
             tok.token_to_id("fun"), tok.sep_token_id]
    assert ids[0, :6].tolist() == first
    assert features["padding_mask"].numpy().sum(axis=1).tolist() == [6, 7]
    assert features["segment_ids"].numpy()[1].tolist()[:7] == [0, 0, 0, 1, 1, 1, 1]
    assert not truncated.numpy().any()


def test_truncation_is_flagged_and_counted(encoder):
    texts = ["good " * 20, "ok"]
    features, truncated = encoder(np.array(texts))
    assert truncated.numpy().tolist() == [True, False]
    assert features["token_ids"].shape[1] == 12
    split = encode_examples(encoder, texts, None, np.array([1, 0], np.int32))
    assert split.truncated == 1 and split.size == 2


def test_encoded_examples_keep_order_and_real_lengths(encoder):
    texts = ["a", "good film", "the best movie ever"]
    split = encode_examples(encoder, texts, None, np.array([0, 1, 2], np.int32))
    lengths = [int(x["padding_mask"].numpy().sum()) for x, _ in split.dataset]
    assert [int(y) for _, y in split.dataset] == [0, 1, 2]
    assert [len(x["token_ids"]) for x, _ in split.dataset] == lengths
    assert lengths[0] == 3  # [CLS] a [SEP]


def make_split(encoder, n=64):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "very", "long", "the"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 9))) for _ in range(n)]
    return encode_examples(encoder, texts, None, np.arange(n, dtype=np.int32))


def test_training_batches_pad_per_batch_and_are_seeded(encoder):
    split = make_split(encoder)
    kwargs = dict(pad_id=0, batch_size=8, bucket_boundaries=[4, 8], sequence_length=12, seed=3, shuffle_buffer=64)
    batches = list(training_dataset(split, **kwargs).take(16))
    for x, _ in batches:
        width = x["token_ids"].shape[1]
        assert width == x["padding_mask"].numpy().sum(axis=1).max()  # no all-padding column
    again = list(training_dataset(split, **kwargs).take(16))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    other = list(training_dataset(split, **{**kwargs, "seed": 4}).take(16))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(batches, other))


def test_static_shapes_pad_to_bucket_boundaries(encoder):
    split = make_split(encoder)
    dataset = training_dataset(split, pad_id=0, batch_size=8, bucket_boundaries=[4, 8], sequence_length=12,
                               seed=0, shuffle_buffer=64, static_shapes=True)
    widths = {x["token_ids"].shape[1] for x, _ in dataset.take(20)}
    assert widths <= {4, 8, 12}


def test_skip_batches_resumes_the_same_order(encoder):
    split = make_split(encoder)
    kwargs = dict(pad_id=0, batch_size=8, bucket_boundaries=[6], sequence_length=12, seed=1, shuffle_buffer=64)
    full = [y.numpy() for _, y in training_dataset(split, **kwargs).take(12)]
    resumed = [y.numpy() for _, y in training_dataset(split, skip_batches=5, **kwargs).take(7)]
    assert all(np.array_equal(a, b) for a, b in zip(full[5:], resumed))


def test_every_example_appears_once_per_epoch(encoder):
    split = make_split(encoder, n=64)
    dataset = training_dataset(split, pad_id=0, batch_size=8, bucket_boundaries=[], sequence_length=12,
                               seed=0, shuffle_buffer=64)
    seen = np.concatenate([y.numpy() for _, y in dataset.take(8)])
    assert sorted(seen.tolist()) == list(range(64))


def test_evaluation_batches_hold_every_example_once_among_similar_lengths(encoder):
    split = make_split(encoder, n=40)
    batches = list(evaluation_dataset(split, pad_id=0, batch_size=6))
    assert sorted(np.concatenate([y.numpy() for _, y in batches]).tolist()) == list(range(40))
    for features, _ in batches:  # each batch from one bucket (≤ 8 or 9-16 tokens) and padded to its longest
        lengths = features["padding_mask"].numpy().sum(axis=1)
        assert (lengths <= 8).all() or (lengths > 8).all()
        assert features["token_ids"].shape[1] == lengths.max()


def test_predict_split_gives_outputs_in_order_from_one_trace(encoder):
    import keras
    import tensorflow as tf

    traces = []

    class Lengths(keras.layers.Layer):  # the example's length, from its padding mask
        def call(self, mask):
            traces.append(1)
            return tf.reduce_sum(tf.cast(mask, tf.float32), axis=1, keepdims=True)

    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    model = keras.Model({"padding_mask": mask}, Lengths()(mask))
    split = make_split(encoder, n=40)
    traces.clear()
    lengths = predict_split(model, split, pad_id=0, batch_size=6)
    assert lengths[:, 0].tolist() == [int(f["padding_mask"].numpy().sum()) for f, _ in split.dataset]
    assert len(traces) == 1  # one trace for every batch shape
    again = predict_split(model, make_split(encoder, n=13), pad_id=0, batch_size=4)
    assert again.shape == (13, 1)
    assert len(traces) == 1  # the model's second evaluation reuses the trace (tfsft evaluate, robustness)
