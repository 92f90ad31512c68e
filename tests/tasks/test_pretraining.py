"""Pretraining: masking statistics, block packing, pretrain → preset → fine-tune, generation."""

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tfsft.config import ConfigError
from tfsft.data.corpus import Corpus
from tfsft.experiment import config_from_mapping, load_config
from tfsft.generation import generate, load_causal_lm
from tfsft.tasks.pretraining import CausalLMEncoder, MaskedLMOptions, MaskedLMTask
from tfsft.training import pretrain, train

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"] + [f"w{i}" for i in range(995)]
PAD, CLS, SEP, MASK = 0, 1, 2, 4
WORDS = ["the", "a", "film", "movie", "story", "actor", "plot", "scene", "funny", "dull", "charming", "long", "short", "great", "bad", "music", "director", "camera", "light", "dark", "night", "day", "city", "river", "dog", "cat", "runs", "walks", "plays", "sings"]


def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(4, 14))) + rng.choice([".", "!"]) for _ in range(n)]


def masked_lm_task(**options):
    task = MaskedLMTask(MaskedLMOptions(**options), None)
    task.make_encoder(keras_hub.models.BertTokenizer(vocabulary=VOCAB), sequence_length=102)
    return task


def test_masking_rates_and_untouched_special_tokens():
    tf.random.set_seed(0)
    task = masked_lm_task()
    rng = np.random.default_rng(0)
    batch, length = 256, 102
    ids = rng.integers(5, len(VOCAB), size=(batch, length)).astype(np.int32)
    ids[:, 0] = CLS
    lengths = np.where(np.arange(batch) % 2 == 0, length, 62)  # half the rows padded after 62 tokens
    for row, n in enumerate(lengths):
        ids[row, n - 1] = SEP
        ids[row, n:] = PAD
    features = {"token_ids": tf.constant(ids), "segment_ids": tf.zeros_like(ids),
                "padding_mask": tf.constant((ids != PAD).astype(np.int32))}
    (inputs, mask_ids, weights), = tf.data.Dataset.from_tensors(features).map(task.batch_transform)
    out, positions = inputs["token_ids"].numpy(), inputs["mask_positions"].numpy()
    mask_ids, weights = mask_ids.numpy(), weights.numpy().astype(bool)

    maskable = lengths - 2
    assert (weights.sum(1) == np.ceil(0.15 * maskable)).all()  # ceil(rate · n) selected per sequence
    assert abs(weights.sum() / maskable.sum() - 0.15) < 0.01
    rows = np.repeat(np.arange(batch)[:, None], positions.shape[1], 1)[weights]
    cols = positions[weights]
    assert (mask_ids[weights] == ids[rows, cols]).all()  # labels are the original tokens
    assert not np.isin(ids[rows, cols], [PAD, CLS, SEP]).any()  # never select special tokens / padding
    new = out[rows, cols]
    masked, kept = (new == MASK).mean(), (new == ids[rows, cols]).mean()
    random = ((new != MASK) & (new != ids[rows, cols])).mean()
    assert abs(masked - 0.8) < 0.03 and abs(random - 0.1) < 0.03 and abs(kept - 0.1) < 0.03
    unselected = np.ones_like(ids, bool)
    unselected[rows, cols] = False
    assert (out[unselected] == ids[unselected]).all()  # special tokens, padding and the rest untouched
    assert out.shape == ids.shape and (inputs["padding_mask"].numpy() == (ids != PAD)).all()


def test_documents_become_cls_piece_sep_without_truncation_and_validation_masks_are_fixed():
    task = MaskedLMTask(MaskedLMOptions(), None)
    encoder = task.make_encoder(keras_hub.models.BertTokenizer(vocabulary=VOCAB), sequence_length=6)
    corpus = Corpus(["w1 w2 w3 w4 w5 w6 w7 w8 w9", "w10"], [1, 2], [("mem", 0)])
    rows = encoder.sequences(corpus.texts).to_list()
    assert rows == [[CLS, 6, 7, 8, 9, SEP], [CLS, 10, 11, 12, 13, SEP], [CLS, 14, SEP], [CLS, 15, SEP]]
    split = task.encode(corpus, encoder, training=False)
    first = [tuple(np.asarray(v).tolist() for v in (x["token_ids"], x["mask_positions"], y, w))
             for x, y, w in split.dataset]
    second = [tuple(np.asarray(v).tolist() for v in (x["token_ids"], x["mask_positions"], y, w))
              for x, y, w in split.dataset]
    assert first == second and len(first) == 4
    assert task.stats["validation"] == {"documents": 2, "sequences": 4, "tokens": 18}


def test_packed_blocks_cover_the_stream_without_loss():
    encoder = CausalLMEncoder(SimpleNamespace(end_token_id=0, pad_token_id=0), sequence_length=8)
    for n in (9, 17, 50, 81):
        stream = np.arange(100, 100 + n)
        blocks, leftover = encoder.pack(stream)
        assert blocks.shape == ((n - 1) // 8, 9)
        inputs, targets = blocks[:, :-1], blocks[:, 1:]
        assert np.concatenate([inputs.ravel(), stream[len(inputs) * 8:]]).tolist() == stream.tolist()
        assert (targets.ravel() == stream[1: len(inputs) * 8 + 1]).all()  # each target follows its input
        assert leftover == n - len(blocks) * 8 and 1 <= leftover <= 8


def test_option_and_pretrain_config_validation():
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"data": {"files": {"train": "x.txt"}},
                             "task": {"name": "masked_lm", "mask_token_rate": 0.95, "mask_rate": 0},
                             "model": {"backbone": "random", "architecture": "gpt2", "vocabulary": "v.json"}})
    message = str(err.value)
    assert "task.mask_rate" in message and "task.random_token_rate" in message and "model.merges" in message
    config = config_from_mapping({"data": {"files": {"train": "x.txt"}}, "task": {"name": "causal_lm"},
                                  "model": {"backbone": "random", "vocabulary": "v.txt"}})
    with pytest.raises(ConfigError) as err:
        pretrain(config)
    assert "train.max_steps" in str(err.value) and "model.architecture" in str(err.value)


@pytest.mark.parametrize("name", ["pretrain_bert_small", "pretrain_gpt2_small",
                                  "sst2_subset_pretrained", "sst2_subset_random"])
def test_shipped_configs_load(name):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert config.name == name


def tiny_config(tmp_path, task, **train):
    gpt2 = task["name"] == "causal_lm"
    run = tmp_path / ("gpt2" if gpt2 else "bert")
    model = {"backbone": "random", "architecture": "gpt2" if gpt2 else "bert", "num_layers": 1, "num_heads": 2,
             "hidden_dim": 16, "intermediate_dim": 32, "sequence_length": 24,
             "vocabulary": str(run / ("vocab.json" if gpt2 else "vocab.txt"))}
    if gpt2:
        model["merges"] = str(run / "merges.txt")
    return config_from_mapping({
        "name": run.name, "run_dir": str(run), "seed": 1, "task": task, "model": model,
        "data": {"files": {"train": "corpus.txt[:90%]", "validation": "corpus.txt[90%:]"},
                 "data_dir": str(tmp_path)},
        "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 3e-3, "verbose": 0,
                  "bucket_boundaries": [8, 16], **train},
    })


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    text = sentences(240)
    (root / "corpus.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    labelled = ["sentence\tlabel"] + [f"{t}\t{int('funny' in t or 'great' in t)}" for t in sentences(64, 1)]
    (root / "labelled.tsv").write_text("\n".join(labelled) + "\n", encoding="utf-8")
    return root


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # compile=False reload
def test_pretrain_masked_lm_saves_a_preset_that_fine_tuning_loads(corpus_dir):
    config = tiny_config(corpus_dir, {"name": "masked_lm", "vocabulary_size": 80})
    result = pretrain(config, log=lambda line: None)
    assert {"masked_token_accuracy", "perplexity", "cross_entropy"} <= set(result.metrics)
    assert result.metrics["perplexity"] == pytest.approx(np.exp(result.metrics["cross_entropy"]))
    assert 0.0 <= result.metrics["masked_token_accuracy"] <= 1.0
    state = json.loads((result.run_dir / "task.json").read_text())
    assert state["corpus"]["train"]["documents"] == 216

    backbone = keras_hub.models.Backbone.from_preset(str(result.preset_dir))
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(result.preset_dir))
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert tokenizer.vocabulary == (result.run_dir / "vocab.txt").read_text().splitlines()
    trained = keras.saving.load_model(result.run_dir / "model.keras", compile=False).backbone
    np.testing.assert_array_equal(backbone.token_embedding.embeddings.numpy(),
                                  trained.token_embedding.embeddings.numpy())

    fine_tune = config_from_mapping({
        "name": "ft", "run_dir": str(corpus_dir / "ft"), "seed": 1,
        "model": {"backbone": str(result.preset_dir), "sequence_length": 24},
        "task": {"name": "text_classification", "labels": ["0", "1"]},
        "data": {"files": {"train": "labelled.tsv", "validation": "labelled.tsv"}, "data_dir": str(corpus_dir),
                 "text_column": "sentence"},
        "train": {"max_steps": 4, "batch_size": 8, "verbose": 0, "bucket_boundaries": [8, 16]},
    })
    metrics = train(fine_tune, log=lambda line: None).metrics
    assert metrics["examples"] == 64 and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.fixture(scope="module")
def gpt2_run(corpus_dir):
    config = tiny_config(corpus_dir, {"name": "causal_lm", "documents": "lines", "vocabulary_size": 300})
    return pretrain(config, log=lambda line: None)


def test_pretrain_causal_lm_reports_perplexity_and_packing(gpt2_run):
    metrics = gpt2_run.metrics
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["cross_entropy"]))
    assert 0.0 <= metrics["token_accuracy"] <= 1.0
    stats = json.loads((gpt2_run.run_dir / "task.json").read_text())["corpus"]
    for split in ("train", "validation"):
        s = stats[split]
        assert s["blocks"] * 24 + s["tokens_in_final_partial_block"] == s["tokens"]
    assert metrics["tokens"] == stats["validation"]["blocks"] * 24
    assert isinstance(keras_hub.models.Backbone.from_preset(str(gpt2_run.preset_dir)),
                      keras_hub.models.GPT2Backbone)


def test_greedy_generation_is_deterministic_and_respects_max_length(gpt2_run):
    prompts = ["the dog", "a film"]
    first = generate(gpt2_run.run_dir, prompts, sampler="greedy", max_length=16, stop_at_end=False)
    second = generate(gpt2_run.preset_dir, prompts, sampler="greedy", max_length=16, stop_at_end=False)
    assert first == second
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(gpt2_run.preset_dir))
    for prompt, text in zip(prompts, first):
        assert text.startswith(prompt)
        assert len(tokenizer(text)) + 1 == 16  # + the start token; stops exactly at max_length
    stopped = generate(gpt2_run.run_dir, prompts, sampler="greedy", max_length=16)  # stops at <|endoftext|>
    assert all(full.startswith(text) for full, text in zip(first, stopped))
    sampled = generate(gpt2_run.run_dir, prompts, sampler="top_k", k=5, seed=3, max_length=12)
    assert all(len(tokenizer(t)) + 1 <= 12 for t in sampled)
    with pytest.raises(ValueError, match="max-length must be in"):
        load_causal_lm(gpt2_run.run_dir, 25)  # the model's max_sequence_length is 24


def test_generation_needs_a_causal_lm_preset(tmp_path):
    with pytest.raises(FileNotFoundError, match="no KerasHub preset"):
        generate(tmp_path, ["x"])
