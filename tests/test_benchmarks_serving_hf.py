"""The serving comparison with Hugging Face (benchmarks/): the BERT exporter and the scripts' arguments.

A tiny random KerasHub BERT is exported in-process; torch is not needed: the
exported tensors are checked by name, shape and layout, and by a NumPy
forward pass of Hugging Face's `BertForSequenceClassification` that must give
the Keras model's logits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_hf_serving  # noqa: E402
import bench_serving  # noqa: E402
import export_hf_classifier as exporter  # noqa: E402

LAYERS, HEADS, HIDDEN, INTERMEDIATE, POSITIONS = 2, 2, 16, 24, 16
LABELS = ["negative", "neutral", "positive"]


def build(tiny_vocab, pooling: str, seed: int = 0):
    """(model, tokenizer): tfsft's classifier on a tiny KerasHub BERT, every weight random (biases and norms too)."""
    import keras_hub

    from tfsft.tasks.text_classification import TextClassificationOptions, TextClassificationTask

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(tiny_vocab), lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE, max_sequence_length=POSITIONS, dropout=0.0)
    options = TextClassificationOptions(labels=["0", "1", "2"], label_names=LABELS, pooling=pooling, dropout=0.0)
    model = TextClassificationTask(options, None).build_model(backbone)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    return model, tokenizer


def expected_names(layers: int) -> set[str]:
    """Every tensor name of Transformers' BertForSequenceClassification with `layers` layers."""
    names = {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
             "bert.embeddings.LayerNorm.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
             "classifier.weight", "classifier.bias"}
    for i in range(layers):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                     "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            names |= {f"bert.encoder.layer.{i}.{part}.weight", f"bert.encoder.layer.{i}.{part}.bias"}
    return names


def hf_bert_logits(t: dict, config: dict, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Transformers' BertForSequenceClassification forward pass (eval mode) in NumPy float64."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    heads = config["num_attention_heads"]
    assert config["hidden_act"] == "gelu_pytorch_tanh"

    def linear(x, name):
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config["layer_norm_eps"]) * t[f"{name}.weight"] + t[f"{name}.bias"]

    def gelu_tanh(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    batch, length = ids.shape
    x = (t["bert.embeddings.word_embeddings.weight"][ids] + t["bert.embeddings.position_embeddings.weight"][:length]
         + t["bert.embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "bert.embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}"

        def split(y):  # (B, T, H·K) → (B, H, T, K)
            return y.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (split(linear(x, f"{p}.attention.self.{r}")) for r in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + np.where(mask[:, None, None, :], 0.0, -1e9)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = norm(x + linear(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        hidden = gelu_tanh(linear(x, f"{p}.intermediate.dense"))
        x = norm(x + linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    pooled = np.tanh(linear(x[:, 0], "bert.pooler.dense"))
    return linear(pooled, "classifier")


@pytest.fixture
def exported(tiny_vocab, tmp_path, float32_policy):
    model, tokenizer = build(tiny_vocab, "first")
    out = exporter.write_folder(model, tokenizer, LABELS, "first", 12, tmp_path / "hf")
    return model, tokenizer, out


def test_the_folder_holds_every_hf_bert_tensor_with_its_shape(exported):
    from safetensors.numpy import load_file

    _, tokenizer, out = exported
    tensors = load_file(str(out / "model.safetensors"))
    assert set(tensors) == expected_names(LAYERS)
    vocab = tokenizer.vocabulary_size()
    shapes = {"bert.embeddings.word_embeddings.weight": (vocab, HIDDEN),
              "bert.embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
              "bert.embeddings.token_type_embeddings.weight": (2, HIDDEN),
              "bert.encoder.layer.1.attention.self.query.weight": (HIDDEN, HIDDEN),
              "bert.encoder.layer.1.attention.self.value.bias": (HIDDEN,),
              "bert.encoder.layer.1.attention.output.dense.weight": (HIDDEN, HIDDEN),
              "bert.encoder.layer.0.intermediate.dense.weight": (INTERMEDIATE, HIDDEN),
              "bert.encoder.layer.0.intermediate.dense.bias": (INTERMEDIATE,),
              "bert.encoder.layer.0.output.dense.weight": (HIDDEN, INTERMEDIATE),
              "bert.encoder.layer.0.output.LayerNorm.weight": (HIDDEN,),
              "bert.pooler.dense.weight": (HIDDEN, HIDDEN),
              "classifier.weight": (len(LABELS), HIDDEN), "classifier.bias": (len(LABELS),)}
    for name, shape in shapes.items():
        assert tensors[name].shape == shape, name
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_kernels_are_transposed_to_out_in_and_attention_heads_flattened(exported):
    from safetensors.numpy import load_file

    model, _, out = exported
    tensors = load_file(str(out / "model.safetensors"))
    block = exporter.find_backbone(model).get_layer("transformer_layer_1")
    attention = block._self_attention_layer
    query = np.asarray(attention.query_dense.kernel)  # (D, H, K)
    hf_query = tensors["bert.encoder.layer.1.attention.self.query.weight"]  # (H·K, D)
    head_dim = HIDDEN // HEADS
    for d, h, k in [(0, 0, 0), (3, 1, 2), (HIDDEN - 1, HEADS - 1, head_dim - 1)]:
        assert hf_query[h * head_dim + k, d] == query[d, h, k]
    np.testing.assert_array_equal(tensors["bert.encoder.layer.1.attention.self.key.bias"],
                                  np.asarray(attention.key_dense.bias).reshape(-1))
    output = np.asarray(attention.output_dense.kernel)  # (H, K, D)
    assert tensors["bert.encoder.layer.1.attention.output.dense.weight"][5, head_dim + 2] == output[1, 2, 5]
    np.testing.assert_array_equal(tensors["bert.encoder.layer.1.intermediate.dense.weight"],
                                  np.asarray(block._feedforward_intermediate_dense.kernel).T)
    np.testing.assert_array_equal(tensors["bert.encoder.layer.1.output.dense.weight"],
                                  np.asarray(block._feedforward_output_dense.kernel).T)
    np.testing.assert_array_equal(tensors["bert.encoder.layer.1.output.LayerNorm.bias"],
                                  np.asarray(block._feedforward_layer_norm.beta))
    # pooling "first": an identity-scaled pooler and a classifier scaled back by the inverse power of two
    np.testing.assert_array_equal(tensors["bert.pooler.dense.weight"], exporter.POOLER_SCALE * np.eye(HIDDEN))
    np.testing.assert_array_equal(tensors["bert.pooler.dense.bias"], np.zeros(HIDDEN))
    np.testing.assert_array_equal(tensors["classifier.weight"] * exporter.POOLER_SCALE,
                                  np.asarray(model.get_layer("logits").kernel).T)


def test_config_and_tokenizer_files_describe_the_run(exported):
    _, tokenizer, out = exported
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (
        HIDDEN, LAYERS, HEADS, INTERMEDIATE, tokenizer.vocabulary_size(), POSITIONS)
    assert config["hidden_act"] == "gelu_pytorch_tanh" and config["layer_norm_eps"] == 1e-12
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert config["pad_token_id"] == tokenizer.pad_token_id
    assert (out / "vocab.txt").read_text().splitlines() == tokenizer.get_vocabulary()
    tok = json.loads((out / "tokenizer_config.json").read_text())
    assert tok["do_lower_case"] is True and tok["strip_accents"] is False and tok["model_max_length"] == 12
    assert (tok["cls_token"], tok["sep_token"], tok["pad_token"], tok["unk_token"]) == ("[CLS]", "[SEP]", "[PAD]",
                                                                                        "[UNK]")


@pytest.mark.parametrize("pooling", ["first", "pooler"])
def test_hf_forward_pass_on_the_exported_tensors_gives_the_keras_logits(tiny_vocab, tmp_path, float32_policy,
                                                                       pooling):
    from safetensors.numpy import load_file

    from tfsft.data.pipeline import TextEncoder

    model, tokenizer = build(tiny_vocab, pooling, seed=3)
    out = exporter.write_folder(model, tokenizer, LABELS, pooling, 12, tmp_path / pooling)
    features, _ = TextEncoder(tokenizer, 12)(["a gripping , beautifully acted film", "dull", "not very good !"])
    features = {k: v.numpy() for k, v in features.items()}
    keras_logits = np.asarray(model(features, training=False))
    hf_logits = hf_bert_logits(load_file(str(out / "model.safetensors")),
                               json.loads((out / "config.json").read_text()),
                               features["token_ids"], features["padding_mask"].astype(bool))
    assert features["padding_mask"].sum(1).tolist() == [8, 3, 6]  # padding is masked, not just absent
    np.testing.assert_allclose(hf_logits, keras_logits, atol=2e-5, rtol=1e-5)
    assert np.abs(keras_logits).max() > 0.1  # random weights: the logits are not trivially zero


def test_pooler_export_copies_the_pretrained_pooler_and_mean_pooling_is_refused(tiny_vocab, float32_policy):
    model, _ = build(tiny_vocab, "pooler")
    tensors = exporter.hf_tensors(model, "pooler")
    pooler = exporter.find_backbone(model).get_layer("pooled_dense")
    np.testing.assert_array_equal(tensors["bert.pooler.dense.weight"], np.asarray(pooler.kernel).T)
    np.testing.assert_array_equal(tensors["classifier.weight"], np.asarray(model.get_layer("logits").kernel).T)
    mean_model, _ = build(tiny_vocab, "mean")
    with pytest.raises(ValueError, match="pooling: 'mean' has no BertForSequenceClassification form"):
        exporter.hf_tensors(mean_model, "mean")


def test_label_names_must_match_the_logits(tiny_vocab, tmp_path, float32_policy):
    model, tokenizer = build(tiny_vocab, "first")
    with pytest.raises(ValueError, match="2 label names for 3 logits"):
        exporter.write_folder(model, tokenizer, LABELS[:2], "first", 12, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_exporter_arguments(tmp_path, capsys):
    args = exporter.parse_args([str(tmp_path)])
    assert (args.out, args.reference) == (str(exporter.DEFAULT_OUT), 64)
    with pytest.raises(SystemExit):
        exporter.parse_args([str(tmp_path), "--reference", "-1"])
    with pytest.raises(SystemExit):
        exporter.parse_args([str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err


def test_hf_serving_arguments_and_names(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    folder = str(tmp_path)
    for argv, name in [([], "serving_hf_fp32"), (["--precision", "bf16"], "serving_hf_bf16"),
                       (["--precision", "bf16_autocast", "--compile"], "serving_hf_bf16_autocast_compiled"),
                       (["--verify", "ref.json"], "serving_hf_verify")]:
        assert bench_hf_serving.result_name(bench_hf_serving.parse_args(["--model-dir", folder, *argv])) == name
    for bad in (["--verify", "ref.json", "--compile"], ["--verify", "ref.json", "--precision", "bf16"],
                ["--requests", "0"], ["--threads", "0"], ["--tolerance", "0"], ["--precision", "fp16"]):
        with pytest.raises(SystemExit):
            bench_hf_serving.parse_args(["--model-dir", folder, *bad])
    with pytest.raises(SystemExit):
        bench_hf_serving.parse_args(["--model-dir", str(tmp_path / "nothing")])
    assert "run export_hf_classifier.py first" in capsys.readouterr().err


def test_serving_run_dir_picks_the_newest_numbered_export(tmp_path):
    args = bench_serving.parse_args(["--impl", "savedmodel", "--run-dir", "runs/sst2_minilm"])
    assert args.run_dir == "runs/sst2_minilm"
    assert bench_serving.parse_args(["--impl", "savedmodel"]).run_dir == str(bench_serving.SCRATCH / "serving_run")
    with pytest.raises(SystemExit):
        bench_serving.parse_args(["--impl", "savedmodel", "--requests", "0"])
    for version in ("2", "10", "9", ".11.partial"):
        (tmp_path / "export" / "sst2" / version).mkdir(parents=True)
        (tmp_path / "export" / "sst2" / version / "saved_model.pb").write_bytes(b"")
    assert bench_serving.newest_export(tmp_path) == tmp_path / "export" / "sst2" / "10"
    with pytest.raises(SystemExit, match="no export"):
        bench_serving.newest_export(tmp_path / "empty")


def test_both_sides_time_the_same_requests(monkeypatch):
    texts = [f"sentence {i}" for i in range(50)]
    monkeypatch.setattr(bench_serving, "read_sst2", lambda split: (texts, [0] * len(texts)))
    warmup, single, batched = bench_hf_serving.requests(7, 2)  # the function bench_serving.py times with
    assert bench_hf_serving.requests is bench_serving.requests
    assert single == [[t] for t in texts[:7]]
    assert batched == [texts[:32], texts[32:] + texts[:14]]  # cycled through the dev sentences
    assert len(warmup) == bench_serving.WARMUP_CALLS + 3 and warmup[0] == [texts[25]]


def test_reference_holds_unpadded_token_ids_and_the_float32_logits(tiny_vocab, float32_policy):
    from tfsft.data.pipeline import TextEncoder

    model, tokenizer = build(tiny_vocab, "first")
    encoder = TextEncoder(tokenizer, 12)
    texts = ["dull", "a gripping , beautifully acted film", "x " * 20]
    ref = exporter.reference(model, encoder, texts)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert [len(ids) for ids in ref["token_ids"]] == [3, 8, 12]  # the last one cut at sequence_length
    assert all(ids[0] == cls and ids[-1] == sep for ids in ref["token_ids"])
    assert exporter.token_ids(encoder, texts, batch_size=2) == ref["token_ids"]  # batching changes nothing
    features, _ = encoder(texts)
    np.testing.assert_allclose(ref["logits_float32"], np.asarray(model(features, training=False)), atol=1e-6)
    assert ref["compute_dtype_as_trained"] == "float32"
