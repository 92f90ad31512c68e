"""One export root for the serving tests, served by the test model server.

- sst2/1, sst2/2: tiny classifiers trained with two seeds and exported by
  `tfsft.export.export` (the first verified in a fresh process);
- pairs/1: an untrained sentence-pair regressor (one output: `score`);
- ner/1: an untrained NER model (padded (B, W) string outputs, `_count`s);
- chat/1: a stand-in with the signatures of the generation SavedModel
  (`serving_default(prompt)`, `generate` with scalar knobs).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import tensorflow as tf

from tests.conftest import tiny_model, tiny_train
from tests.serving.model_server import ModelServer
from tfsft.experiment import config_from_mapping
from tfsft.models.backbones import load_backbone
from tfsft.serving.models_config import write_models_config
from tfsft.tasks import get_task

WORDS = "good bad film movie story fun dull gripping".split()


def write_rows(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"text": f"{WORDS[i % 8]} {WORDS[(3 * i + 1) % 8]} film", "label": str(i % 2), "score": i % 5 / 4}
            for i in range(offset, offset + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sst2_run(tmp: Path, vocab: Path, root: Path, seed: int) -> dict:
    return {
        "name": "sst2_tiny", "run_dir": str(tmp / f"run_{seed}"), "seed": seed,
        "model": tiny_model(vocab),
        "task": {"name": "text_classification", "labels": ["0", "1"], "label_names": ["negative", "positive"]},
        "data": {"files": {"train": str(write_rows(tmp / "train.jsonl", 32)),
                           "validation": str(write_rows(tmp / "val.jsonl", 8, offset=32))}},
        "train": tiny_train(),
        "export": {"export_dir": str(root), "model_name": "sst2"},
    }


def save_untrained(mapping: dict, path: Path, state: dict) -> Path:
    """The task's serving module around a random model, saved as `export` would (no training)."""
    config = config_from_mapping(mapping)
    task = get_task(config)
    task.load_state(state)
    backbone, tokenizer = load_backbone(config.model)
    module = task.serving_module(task.build_model(backbone), task.make_encoder(tokenizer, config.model.sequence_length))
    signatures = {"serving_default": module.serve, **getattr(module, "extra_signatures", lambda: {})()}
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


class GenerationStandIn(tf.Module):
    """The signatures of `GenerationServingModule`: the completion is the prompt upper-cased,
    cut to `max_new_tokens` characters in `generate`."""

    def __init__(self):
        super().__init__()
        prompt = tf.TensorSpec([None], tf.string, name="prompt")
        self.serve = tf.function(lambda prompt: self._outputs(tf.strings.upper(prompt)), input_signature=[prompt])
        self.generate = tf.function(self._generate, input_signature=[
            prompt, tf.TensorSpec([], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"), tf.TensorSpec([], tf.int64, name="seed")])

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        return self._outputs(tf.strings.substr(tf.strings.upper(prompt), 0, max_new_tokens))

    @staticmethod
    def _outputs(completion):
        return {"completion": completion, "num_tokens": tf.strings.length(completion),
                "finish_reason": tf.fill(tf.shape(completion), "length"),
                "prompt_truncated": tf.zeros(tf.shape(completion), tf.bool)}


@pytest.fixture(scope="session")
def exports(tmp_path_factory, tiny_vocab) -> SimpleNamespace:
    from tfsft.export import export
    from tfsft.training import train

    tmp = tmp_path_factory.mktemp("serving")
    root = tmp / "export_root"
    runs, logs = [], []
    for seed, verify in ((1, True), (2, False)):
        run = train(config_from_mapping(sst2_run(tmp, tiny_vocab, root, seed)), log=lambda _: None).run_dir
        export(run, verify=verify, log=logs.append)
        runs.append(run)
    save_untrained({"task": {"name": "text_regression"}, "model": tiny_model(tiny_vocab),
                    "data": {"files": {"train": "x.jsonl"}, "text_pair_column": "pair"}}, root / "pairs" / "1", {})
    save_untrained({"task": {"name": "token_classification"}, "model": tiny_model(tiny_vocab),
                    "data": {"files": {"train": "x.txt"}}},
                   root / "ner" / "1", {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]})
    chat = GenerationStandIn()
    tf.saved_model.save(chat, str(root / "chat" / "1"),
                        signatures={"serving_default": chat.serve, "generate": chat.generate})
    write_models_config(root, base_path=str(root))
    return SimpleNamespace(root=root, runs=runs, logs=logs)


@pytest.fixture(scope="session")
def server(exports):
    with ModelServer(exports.root / "models.config", lifetime=900) as server:
        yield server
