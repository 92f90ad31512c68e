"""Export precision: bf16 weights, Keras int8; the SavedModel still takes strings and reloads in a fresh process."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_text_config
from tfsft.export import export, predict
from tfsft.models.precision import quantize, with_dtype
from tfsft.peft.lora import sublayers
from tfsft.run_dir import load_run
from tfsft.tasks.text_classification import TextClassificationOptions, TextClassificationTask
from tfsft.training import train

TEXTS = ["good film", "bad dull film", "a long boring story"]


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def tiny_classifier(dtype=None):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=16, dropout=0.0, dtype=dtype)
    task = TextClassificationTask(TextClassificationOptions(labels=["a", "b", "c"], dropout=0.0), None)
    return task.build_model(backbone)


def inputs():
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(1, 60, (4, 9)).astype("int32"), "padding_mask": np.ones((4, 9), "int32"),
            "segment_ids": np.zeros((4, 9), "int32")}


@pytest.mark.parametrize("trained_in, dtype", [("float32", "bfloat16"), ("mixed_bfloat16", "float32")])
def test_with_dtype_rebuilds_the_model_in_that_precision(trained_in, dtype):
    model = tiny_classifier(dtype=trained_in)
    rebuilt = with_dtype(model, dtype)
    assert {w.dtype for w in rebuilt.weights} == {dtype}
    assert {layer.dtype_policy.name for layer in rebuilt.layers if layer.weights} == {dtype}
    x = inputs()
    np.testing.assert_allclose(np.asarray(rebuilt(x), np.float32), np.asarray(model(x), np.float32), atol=3e-2)


@pytest.mark.parametrize("mode", ["int8", "int8_weight_only"])
def test_int8_keeps_int8_kernels_and_answers_close_to_float(mode):
    model = tiny_classifier()
    x = inputs()
    reference = np.asarray(model(x))
    quantize(model, mode)
    int8 = [w.path for w in model.weights if w.dtype == "int8"]
    assert any("query" in p for p in int8) and any("feedforward_output_dense" in p for p in int8)
    assert any("token_embedding" in p for p in int8)
    queries = [layer for _, _, layer in sublayers(model) if layer.name == "query"]
    assert queries and all((q.inputs_quantizer is None) == (mode == "int8_weight_only") for q in queries)
    # abs-max int8: each kernel entry within half a step (max|w|/254) of its value; outputs within a few %
    np.testing.assert_allclose(np.asarray(model(x)), reference, atol=0.05 * np.abs(reference).max())


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_vocab):
    keras.mixed_precision.set_dtype_policy("float32")
    config = tiny_text_config(tmp_path_factory.mktemp("precision"), tiny_vocab, max_steps=2, eval_every_steps=2)
    return train(config, log=lambda _: None).run_dir


@pytest.mark.parametrize("setting, weight_dtype", [  # each export ~30-40 s on the shared 2 cores: int8 by default
    ("export.quantize=int8", "int8"),
    pytest.param("export.quantize=int8_weight_only", "int8", marks=pytest.mark.slow),
    pytest.param("export.dtype=bfloat16", "bfloat16", marks=pytest.mark.slow),
])
def test_an_export_at_lower_precision_takes_strings_and_reloads_in_a_fresh_process(run, setting, weight_dtype):
    lines = []
    saved = export(run, log=lines.append, overrides=[setting])  # the op check and the fresh-process reload pass
    assert f"weights {setting.split('=')[1]}" in lines[0]
    stored = tf.train.load_checkpoint(str(saved / "variables" / "variables")).get_variable_to_dtype_map()
    kernels = {dtype for key, dtype in stored.items() if "_query_dense/_kernel" in key}
    assert kernels == {tf.as_dtype(weight_dtype)}
    loaded = load_run(run)
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    features, _ = encoder(TEXTS)
    reference = tf.nn.softmax(loaded.model(features)).numpy()
    served = np.array([row["probabilities"] for row in predict(saved, TEXTS)])
    np.testing.assert_allclose(served, reference, atol=0.02)
