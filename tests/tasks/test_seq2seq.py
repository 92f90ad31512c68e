"""Translation task: SentencePiece, encoder, loss, T5 cache decoding, end-to-end runs and export."""

import os
import random
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tfsft.config import ModelConfig
from tfsft.experiment import config_from_mapping, load_config
from tfsft.models.backbones import load_seq2seq_backbone
from tfsft.models.tokenizer_training import train_sentencepiece
from tfsft.tasks.translation.search import greedy_search
from tfsft.tasks.translation.task import (
    SequenceCrossentropy,
    TokenAccuracy,
    TranslationEncoder,
    TranslationTask,
    decoding_inputs,
)

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TFSFT_DATA_DIR", REPO.parent / "shared" / "data"))

WORDS = {"a": "ein", "man": "Mann", "dog": "Hund", "runs": "rennt", "sleeps": "schläft", "big": "großer",
         "small": "kleiner", "cat": "Katze", "sings": "singt", "the": "der", "red": "rote", "ball": "Ball"}


def toy_pairs(count, seed=0):
    rng = random.Random(seed)
    english = list(WORDS)
    sources = [" ".join(rng.choice(english) for _ in range(rng.randint(2, 6))) + "." for _ in range(count)]
    targets = [" ".join(WORDS[w.rstrip(".")] for w in s.split()) + "." for s in sources]
    return sources, targets


@pytest.fixture(scope="module")
def sp_proto():
    sources, targets = toy_pairs(300)
    return train_sentencepiece(sources + targets, vocabulary_size=50)


def test_sentencepiece_round_trip_special_ids_and_determinism(sp_proto):
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=sp_proto)
    assert tokenizer.vocabulary_size() == 50
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "</s>", "<unk>", "<s>")] == [0, 1, 2, 3]
    texts = ["a big dog runs.", "der rote Ball schläft."]
    round_trip = tf.function(lambda x: tokenizer.detokenize(tokenizer(x)))
    assert [t.decode() for t in round_trip(tf.constant(texts)).numpy()] == texts
    sources, targets = toy_pairs(300)
    assert train_sentencepiece(sources + targets, vocabulary_size=50) == sp_proto
    with pytest.raises(ValueError, match="vocabulary of 5000 pieces.*Vocabulary size too high"):
        train_sentencepiece(["ab"] * 5, vocabulary_size=5000)


def test_encoder_shifts_targets_and_flags_truncation(sp_proto):
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=sp_proto)
    encoder = TranslationEncoder(tokenizer, sequence_length=16)
    long = "a " + "big " * 20 + "dog."
    pieces, truncated = tf.function(encoder.tokenize)(tf.constant(["a dog.", long]),
                                                      tf.constant(["ein Hund.", "ein Hund."]))
    decoder, labels = pieces["decoder_token_ids"].to_list(), pieces["labels"].to_list()
    for d, y in zip(decoder, labels):
        assert d[0] == 3 and y[-1] == 1 and d[1:] == y[:-1]  # [<s>] y  vs  y [</s>]
    source = pieces["encoder_token_ids"].to_list()
    assert all(s[-1] == 1 and len(s) <= 16 for s in source) and len(source[1]) == 16
    assert truncated.numpy().tolist() == [False, True]
    texts = tf.constant(["a dog.", "a big dog runs."])
    features = tf.function(encoder)(texts)
    assert features["encoder_token_ids"].shape == features["encoder_padding_mask"].shape
    lengths = [len(s) for s in tf.function(encoder.tokenize)(texts)[0]["encoder_token_ids"].to_list()]
    np.testing.assert_array_equal(features["encoder_padding_mask"].numpy().sum(1), lengths)
    prefixed = tf.function(TranslationEncoder(tokenizer, 32, prefix="the the "))(texts)
    assert prefixed["encoder_token_ids"].shape[1] > features["encoder_token_ids"].shape[1]


def test_label_smoothed_loss_matches_formula_and_ignores_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype("float32")
    labels = np.array([[1, 2, 0], [4, 0, 0]])
    weights = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    eps = 0.1
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = (1 - eps) * np.eye(5)[labels] + eps / 5
    expected = (-(q * log_p).sum(-1) * weights).sum() / weights.sum()
    loss = SequenceCrossentropy(eps)
    np.testing.assert_allclose(loss(labels, logits, sample_weight=weights).numpy(), expected, rtol=1e-5)
    changed = logits.copy()
    changed[0, 2] += 10.0  # a padded position
    np.testing.assert_allclose(loss(labels, changed, sample_weight=weights).numpy(), expected, rtol=1e-5)


def test_token_accuracy_skips_padding():
    labels = np.array([[5, 6, 0, 0]])
    logits = np.zeros((1, 4, 8), "float32")
    logits[0, 0, 5] = logits[0, 1, 7] = logits[0, 2, 0] = logits[0, 3, 0] = 1.0  # 1 of 2 real tokens right
    metric = TokenAccuracy()
    metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(0.5)


def test_t5_cached_greedy_decoding_matches_full_recomputation(sp_proto):
    keras.utils.set_random_seed(1)
    model_config = ModelConfig(backbone="random", architecture="t5", num_layers=2, num_heads=2, hidden_dim=16,
                               intermediate_dim=32, dropout=0.0, vocabulary_size=50)
    backbone, tokenizer = load_seq2seq_backbone(
        model_config, keras_hub.tokenizers.SentencePieceTokenizer(proto=sp_proto))
    assert isinstance(tokenizer, keras_hub.models.T5Tokenizer)
    model = TranslationTask(config_from_mapping(_mapping("/x")).task, None).build_model(backbone)
    encoder = TranslationEncoder(tokenizer, 16, prefix="translate: ")
    assert encoder.start_id == encoder.pad_id == 0
    features = tf.function(encoder)(tf.constant(["a dog runs.", "the cat."]))

    @tf.function
    def cached_greedy():
        state, step = decoding_inputs(model, features["encoder_token_ids"], features["encoder_padding_mask"], 6)
        return greedy_search(step, state, 2, start_id=0, end_id=1, pad_id=0, max_length=6)[0]

    tokens = cached_greedy()
    # Reference: re-run the whole model on the growing prefix, no cache.
    features = {k: v.numpy() for k, v in features.items()}
    prefix = np.zeros((2, 1), np.int32)
    for _ in range(tokens.shape[1]):
        logits = model({**features, "decoder_token_ids": prefix, "decoder_padding_mask": np.ones_like(prefix)})
        scores = np.asarray(logits)[:, -1].copy()
        scores[:, 0] = -np.inf
        prefix = np.concatenate([prefix, scores.argmax(-1)[:, None].astype(np.int32)], axis=1)
    expected = prefix[:, 1:]
    for row in range(2):  # after the end token the search pads
        end = list(expected[row]).index(1) + 1 if 1 in expected[row] else len(expected[row])
        np.testing.assert_array_equal(tokens.numpy()[row, :end], expected[row, :end])


def _mapping(data_dir, **task):
    return {
        "name": "toy_translation",
        "run_dir": None,
        "model": {"backbone": "random", "architecture": "transformer", "vocabulary_size": 50, "num_layers": 1,
                  "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64, "sequence_length": 24},
        "task": {"name": "translation", "beam_size": 2, "max_decode_length": 8, **task},
        "data": {"files": {"train": "train", "validation": "val"}, "data_dir": str(data_dir),
                 "source_language": "en", "target_language": "de"},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "max_steps": 2, "verbose": 0,
                  "bucket_boundaries": [16]},
    }


@pytest.mark.parametrize("architecture", ["transformer", pytest.param("t5", marks=pytest.mark.slow)])
def test_train_evaluate_export_round_trip_in_fresh_process(tmp_path, architecture):
    """A tiny run on toy pairs: train → BLEU → export, reloaded in a fresh TF + TF Text process.

    The T5 variant (KV-cache search in the SavedModel) is slow: minutes on a loaded 2-core machine.
    """
    from tfsft.export import export, predict
    from tfsft.training import train

    sources, targets = toy_pairs(72)
    for split, rows in (("train", slice(0, 64)), ("val", slice(64, 72))):
        (tmp_path / f"{split}.en").write_text("\n".join(sources[rows]) + "\n", encoding="utf-8")
        (tmp_path / f"{split}.de").write_text("\n".join(targets[rows]) + "\n", encoding="utf-8")
    mapping = _mapping(tmp_path, prefix="translate English to German: " if architecture == "t5" else "")
    mapping["model"]["architecture"] = architecture
    mapping["run_dir"] = str(tmp_path / "run")
    result = train(config_from_mapping(mapping), log=lambda _: None)
    assert {"bleu", "chrf", "bleu_signature"} <= set(result.metrics)
    assert result.metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    rows = (tmp_path / "run" / "translations.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "source\treference\ttranslation" and len(rows) == 9
    assert (tmp_path / "run" / "sentencepiece.model").exists()
    saved = export(tmp_path / "run", log=lambda _: None)  # verify_export: strings must match exactly
    out = list(predict(saved, ["a dog runs.", "the cat sings."]))
    assert [set(row) for row in out] == [{"text", "translation", "score"}] * 2
    assert all(isinstance(row["translation"], str) for row in out)
    blank = list(predict(saved, ["", " \t ", "a dog runs."]))  # nothing to translate: an empty translation
    assert [(row["translation"], row["score"]) for row in blank[:2]] == [("", 0.0), ("", 0.0)]
    assert blank[2]["translation"] == out[0]["translation"]


def test_shipped_configs_load():
    for name in ("multi30k_transformer", "multi30k_t5"):
        config = load_config(REPO / "configs" / f"{name}.yaml")
        assert config.task.name == "translation"
        assert (config.data.source_language, config.data.target_language) == ("en", "de")


@pytest.mark.slow
def test_shrunk_multi30k_transformer_config_on_real_rows(tmp_path):
    """The shipped config, shrunk (tiny model, 400 pairs, a few steps), on real Multi30k."""
    if not (DATA_DIR / "multi30k" / "train.en").exists():
        pytest.skip(f"Multi30k not found under {DATA_DIR} (set TFSFT_DATA_DIR to ../shared/data)")
    from tfsft.training import evaluate, train

    overrides = [f"run_dir={tmp_path / 'run'}", f"data.data_dir={DATA_DIR}", "data.max_examples=400",
                 "model.num_layers=1", "model.hidden_dim=32", "model.intermediate_dim=64",
                 "model.vocabulary_size=400", "train.max_steps=8", "train.batch_size=32", "train.verbose=0",
                 "task.max_decode_length=16"]
    result = train(load_config(REPO / "configs" / "multi30k_transformer.yaml", overrides), log=lambda _: None)
    assert result.metrics["num_examples"] == 400 and 0.0 <= result.metrics["bleu"] <= 100.0
    metrics = evaluate(tmp_path / "run", "test", log=lambda _: None)
    assert metrics["split"] == "test" and metrics["num_examples"] == 400
    rows = (tmp_path / "run" / "eval_test" / "translations.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("A man in an orange hat starring at something.\t")
