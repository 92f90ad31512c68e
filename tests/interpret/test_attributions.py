"""Integrated gradients (completeness), the model split at its embedding, attention maps, word aggregation."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tfsft.interpret.attention import attention_maps
from tfsft.interpret.attributions import (
    integrated_gradients,
    trapezoid_weights,
    word_attributions,
    wordpiece_words,
)
from tfsft.interpret.split import EmbeddingSplit, InterpretError, float32_copy
from tfsft.run_dir import load_model
from tfsft.tasks.text_classification import (
    TextClassificationOptions,
    TextClassificationTask,
    TextRegressionOptions,
    TextRegressionTask,
)
from tfsft.tasks.token_classification import TokenClassificationOptions, TokenClassificationTask

VOCABULARY = 60
TAGS = ["O", "B-PER", "I-PER"]


def tiny_bert():
    return keras_hub.models.BertBackbone(vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=24)


def task_model(kind: str, pooling: str = "first"):
    """(model, task name) of a tiny untrained task model; `kind` also names the NER casing variant."""
    if kind == "text_classification":
        task = TextClassificationTask(TextClassificationOptions(labels=["a", "b", "c"], pooling=pooling), None)
    elif kind == "text_regression":
        task = TextRegressionTask(TextRegressionOptions(pooling=pooling), None)
    else:
        task = TokenClassificationTask(TokenClassificationOptions(casing=kind == "ner_casing"), None)
        task.labels = list(TAGS)
    model = task.build_model(tiny_bert())
    return model, ("token_classification" if kind.startswith("ner") else kind)


def features(model, lengths=(7, 5)):
    """A batch of random inputs, padded to the longest of `lengths`."""
    rng = np.random.default_rng(0)
    longest = max(lengths)
    mask = np.array([[1] * n + [0] * (longest - n) for n in lengths], np.int32)
    values = {"token_ids": rng.integers(5, VOCABULARY, mask.shape).astype(np.int32) * mask,
              "segment_ids": np.zeros_like(mask), "padding_mask": mask,
              "token_casing": rng.integers(1, 7, mask.shape).astype(np.int32) * mask}
    return {k: values[k] for k in model.input}


def sharpen(model, name: str):
    """Larger head weights, so the output moves a lot between baseline and input (a clearly nonlinear path)."""
    dense = model.get_layer(name)
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(1).normal(0, 3, kernel.shape).astype(np.float32), bias])


@pytest.mark.parametrize("kind,pooling", [("text_classification", "first"), ("text_classification", "mean"),
                                          ("text_classification", "pooler"), ("text_regression", "mean"),
                                          ("ner", "first"), ("ner_casing", "first")])
def test_the_split_model_gives_the_models_own_outputs(kind, pooling):
    model, task_name = task_model(kind, pooling)
    split = EmbeddingSplit.of(model, task_name, pooling)
    x = features(model)
    np.testing.assert_allclose(split.forward(split.embed(x), x), model(x, training=False), atol=1e-5)
    split.check(model, x)  # raises when it does not


def test_a_saved_casing_tagger_splits_after_reloading_and_float32_copy(tmp_path):
    model, task_name = task_model("ner_casing")
    model.get_layer("casing_embedding").set_weights([np.random.default_rng(2).normal(0, 1, (7, 16))])
    model.save(tmp_path / "model.keras")
    copy = float32_copy(load_model(tmp_path / "model.keras"))
    x = features(copy)
    split = EmbeddingSplit.of(copy, task_name)
    assert split.casing_embedding is not None
    np.testing.assert_allclose(split.forward(split.embed(x), x), model(x, training=False), atol=1e-5)


def test_float32_copy_computes_a_mixed_bfloat16_model_in_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")  # the conftest fixture restores float32
    model, task_name = task_model("text_classification")
    keras.mixed_precision.set_dtype_policy("float32")
    x = features(model)
    assert EmbeddingSplit.of(model, task_name).embed(x).dtype == "bfloat16"
    copy = float32_copy(model)
    split = EmbeddingSplit.of(copy, task_name)
    embeddings = split.embed(x)
    assert embeddings.dtype == "float32"
    assert split.transformer_layers[0](embeddings, padding_mask=x["padding_mask"]).dtype == "float32"
    np.testing.assert_allclose(copy(x), model(x), atol=0.05)  # the same weights; bfloat16 rounding apart
    for a, b in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_split_rejects_other_backbones_and_tasks():
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    other = keras.Model({"token_ids": token_ids}, keras.layers.Dense(2, name="logits")(
        keras.layers.Embedding(10, 4)(token_ids)[:, 0]))
    with pytest.raises(InterpretError, match="no BERT-family backbone"):
        EmbeddingSplit.of(other, "text_classification")
    with pytest.raises(InterpretError, match="task 'translation' is not supported"):
        EmbeddingSplit.of(other, "translation")


def test_integrated_gradients_of_a_separable_function_are_exact_per_coordinate():
    """F(x) = Σ sin(x): IG_i = sin(x_i) − sin(x'_i) exactly; the trapezoid error shrinks ~ 1/m²."""
    rng = np.random.default_rng(0)
    x, baseline = rng.normal(0, 1, (5, 3)).astype(np.float32), rng.normal(0, 1, (5, 3)).astype(np.float32)
    exact = (np.sin(x) - np.sin(baseline)).sum(axis=1)  # per token (row)

    def function(points):
        return tf.reduce_sum(tf.sin(points), axis=[1, 2])[:, None]

    errors = []
    for steps in (4, 16, 64):
        ig = integrated_gradients(function, x, baseline, steps, batch_size=7)  # chunks that do not divide m + 1
        assert ig.outputs[0] == pytest.approx(np.sin(x).sum(), abs=1e-5)
        assert ig.baseline_outputs[0] == pytest.approx(np.sin(baseline).sum(), abs=1e-5)
        errors.append(np.abs(ig.attributions[0] - exact).max())
        assert ig.completeness_error[0] <= errors[-1] * len(exact) + 1e-5
    assert errors[0] > 4 * errors[1] > 16 * errors[2]  # 4× the steps: about 1/16 of the error (O(1/m²))
    assert errors[2] < 1e-3


def test_completeness_on_a_tiny_bert_classifier_shrinks_as_steps_grow():
    """Σ attributions → F(x) − F(x') for a class logit of a real (tiny) BERT model."""
    keras.utils.set_random_seed(3)  # the same random model each run
    model, task_name = task_model("text_classification", pooling="mean")  # the mean: every token counts
    sharpen(model, "logits")
    split = EmbeddingSplit.of(model, task_name, pooling="mean")
    x = features(model, lengths=(9,))
    inputs = {k: tf.constant(v) for k, v in x.items()}
    baseline_ids = np.where(np.arange(9) > 0, 0, x["token_ids"][0])[None]  # [PAD] = 0 everywhere but position 0

    def function(embeddings):
        n = tf.shape(embeddings)[0]
        batch = {k: tf.repeat(v, n, axis=0) for k, v in inputs.items()}
        return split.forward(embeddings, batch)[:, 1:2]  # (n, 1): the logit of class 1

    start = split.embed(x)[0]
    end = split.embed({"token_ids": tf.constant(baseline_ids, tf.int32)})[0]
    coarse, fine = (integrated_gradients(function, start, end, steps) for steps in (4, 64))
    assert fine.outputs[0] == pytest.approx(model(x)[0, 1].numpy(), abs=1e-4)
    change = abs(fine.outputs[0] - fine.baseline_outputs[0])
    assert change > 0.1, "the check needs an output that moves along the path"
    print(f"F(x) - F(x') = {change:.4f}; completeness error {coarse.completeness_error[0]:.2e} at 4 steps, "
          f"{fine.completeness_error[0]:.2e} at 64")
    assert fine.completeness_error[0] < coarse.completeness_error[0] / 4
    assert fine.completeness_error[0] < 0.01 * change


def test_trapezoid_weights_sum_to_one():
    assert trapezoid_weights(4).tolist() == [0.125, 0.25, 0.25, 0.25, 0.125]
    with pytest.raises(ValueError, match="steps must be ≥ 1"):
        trapezoid_weights(0)


def test_attention_maps_are_probabilities_over_the_real_tokens():
    model, task_name = task_model("text_classification")
    split = EmbeddingSplit.of(model, task_name)
    batch = features(model, lengths=(5, 8))  # the first example is padded to 8
    first = {k: v[:1] for k, v in batch.items()}
    maps = attention_maps(split, first)
    assert maps.shape == (2, 2, 5, 5)  # layers, heads, real tokens × real tokens
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)  # no probability left on the padding
    unpadded = attention_maps(split, {k: v[:, :5] for k, v in first.items()})
    np.testing.assert_allclose(maps, unpadded, atol=1e-5)


def test_word_pieces_join_into_words_and_word_sums_keep_the_total():
    tokens = ["[CLS]", "grip", "##ping", "film", ",", "un", "##us", "##ual", "[SEP]", "[PAD]"]
    words, token_word = wordpiece_words(tokens, {"[CLS]", "[SEP]", "[PAD]"})
    assert words == ["gripping", "film", ",", "unusual"]
    assert token_word.tolist() == [-1, 0, 0, 1, 2, 3, 3, 3, -1, -1]
    values = np.arange(20, dtype=float).reshape(2, 10)
    per_word = word_attributions(values, token_word, len(words))
    assert per_word.tolist() == [[3, 3, 4, 18], [23, 13, 14, 48]]
    assert per_word.sum() == values[:, token_word >= 0].sum()
