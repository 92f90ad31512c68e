"""LoRA runs end to end on a tiny saved base: the adapter file, loading it onto the base, the merged export,
resuming a killed run, errors for the wrong base, and instruction tuning in mixed_bfloat16."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from tests.conftest import tiny_train
from tests.peft.tiny import classifier, tiny_bert
from tfsft.experiment import config_from_mapping
from tfsft.export import export, predict
from tfsft.models.backbones import load_backbone
from tfsft.peft.adapter import AdapterError, load_adapter
from tfsft.peft.lora import lora_layers
from tfsft.run_dir import load_run
from tfsft.training import train

TEXTS = ["good film", "bad dull film", "great fun", "boring"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_vocab) -> Path:
    """A tiny 'pretrained' BERT saved as a KerasHub preset, so every load gives the same base weights."""
    folder = tmp_path_factory.mktemp("base")
    keras.mixed_precision.set_dtype_policy("float32")  # the preset's dtype; a load casts to the run's policy
    keras.utils.set_random_seed(3)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(tiny_vocab))
    tiny_bert(vocabulary_size=tokenizer.vocabulary_size()).save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder


def lora_config(folder: Path, base: Path, name: str = "run"):
    rows = [{"text": t, "label": label} for t, label in zip(TEXTS, ["pos", "neg", "pos", "neg"])] * 6
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return config_from_mapping({
        "name": "lora", "run_dir": str(folder / name),
        "model": {"backbone": str(base), "sequence_length": 16,
                  "lora": {"rank": 2, "alpha": 4, "targets": ["query", "value", "ffn_in"]}},
        "task": {"name": "text_classification", "dropout": 0.0},
        "data": {"files": {"train": str(data), "validation": str(data)}},
        "train": tiny_train(monitor="val_loss", eval_every_steps=2),  # 3 intervals of 2 steps
    })


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base):
    folder = tmp_path_factory.mktemp("lora")
    keras.mixed_precision.set_dtype_policy("float32")
    lines = []
    result = train(lora_config(folder, base), log=lines.append)
    return result.run_dir, lines


def adapter_on_base(run: Path):
    """The run's task model rebuilt on a freshly loaded base, with the run's adapter."""
    loaded = load_run(run)
    backbone, _ = load_backbone(loaded.config.model)
    model = loaded.task.build_model(backbone)
    load_adapter(model, backbone, run / "adapter.safetensors")
    return loaded, model


def encoded(loaded, texts=TEXTS) -> dict:
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    features, _ = encoder(texts)
    return features


def test_a_lora_run_logs_its_trainable_share_and_keeps_a_small_adapter(lora_run):
    run, lines = lora_run
    (line,) = [line for line in lines if line.startswith("Trainable parameters:")]
    trainable, total = (int(n.replace(",", "")) for n in re.findall(r"([\d,]+) of ([\d,]+)", line)[0])
    assert "LoRA rank 2, alpha 4 on query, value, ffn_in (6 layers)" in line
    tensors = load_file(str(run / "adapter.safetensors"))
    assert sum(t.size for t in tensors.values()) == trainable < total / 10
    assert {name for name in tensors if "lora" not in name} == {"logits/kernel", "logits/bias"}
    assert any(np.abs(t).max() > 0 for name, t in tensors.items() if name.endswith("lora_kernel_b")), "B trained"
    assert (run / "adapter.safetensors").stat().st_size < (run / "model.keras").stat().st_size / 4
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run / "checkpoints").exists() and not (run / "backup").exists()


def test_the_adapter_on_a_fresh_base_is_the_trained_model_and_model_keras_is_merged(lora_run):
    run, _ = lora_run
    loaded, model = adapter_on_base(run)
    assert lora_layers(model) and not lora_layers(loaded.model)
    assert not [w for w in loaded.model.weights if "lora" in w.name]
    x = encoded(loaded)
    np.testing.assert_allclose(model(x), loaded.model(x), atol=1e-5)


def test_the_export_holds_plain_kernels_and_answers_as_the_unmerged_model(lora_run):
    run, _ = lora_run
    saved = export(run, log=lambda _: None)  # checks the reload in a fresh TF + TF Text process
    stored = tf.train.load_checkpoint(str(saved / "variables" / "variables")).get_variable_to_dtype_map()
    assert [k for k in stored if "_query_dense/_kernel" in k] and not [k for k in stored if "lora" in k]
    loaded, model = adapter_on_base(run)
    unmerged = tf.nn.softmax(model(encoded(loaded))).numpy()
    served = [row["probabilities"] for row in predict(saved, TEXTS)]
    np.testing.assert_allclose(served, unmerged, atol=1e-5)


def test_an_adapter_on_the_wrong_base_is_an_error_naming_the_file(lora_run):
    run, _ = lora_run
    path = run / "adapter.safetensors"
    wider = tiny_bert(hidden=32)
    with pytest.raises(AdapterError, match=re.escape(f"{path}: made for another base; LoRA base kernels differ")):
        load_adapter(classifier(wider), wider, path)
    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=16)
    with pytest.raises(AdapterError, match="an adapter for a BertBackbone base; this model's backbone is a GPT2"):
        load_adapter(classifier(gpt2), gpt2, path)
    with pytest.raises(AdapterError, match="model.keras: cannot read the adapter"):
        load_adapter(classifier(wider), wider, run / "model.keras")


class StopAt(keras.callbacks.Callback):
    """A killed run: raises after `step` optimizer steps."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            raise KeyboardInterrupt


def test_a_killed_lora_run_resumes_with_its_adapter(lora_run, tmp_path, base):
    """Killed at step 3 of 6 (backup at step 2) and resumed, it ends with the adapter of the same run
    uninterrupted (`lora_run`)."""
    whole, _ = lora_run
    config = lora_config(tmp_path, base, "killed")
    with pytest.raises(KeyboardInterrupt):
        train(config, log=lambda _: None, callbacks=[StopAt(3)])
    assert sorted(p.name for p in (Path(config.run_dir) / "backup").glob("adapter-*")) == ["adapter-1.safetensors"]
    lines = []
    resumed = train(config, log=lines.append).run_dir
    assert any("Resuming from step 2" in line for line in lines)
    expected, got = load_file(str(whole / "adapter.safetensors")), load_file(str(resumed / "adapter.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=name)


def test_lora_instruction_tuning_of_a_tiny_llama_in_mixed_bfloat16(tmp_path):
    from tests.tasks.test_instruction_tuning import sst2_like, tiny_config
    from tfsft.config import LoraConfig

    sst2_like(tmp_path)
    config = tiny_config(tmp_path, "llama", {"metrics": ["exact_match"]})
    config.model.lora = LoraConfig(rank=2, alpha=4.0, targets=["query", "key", "value", "attention_output",
                                                              "ffn_in", "ffn_out"])
    config.train.precision = "mixed_bfloat16"
    lines = []
    result = train(config, log=lines.append)
    assert np.isfinite(result.metrics["perplexity"]) and 0 <= result.metrics["exact_match"] <= 1
    assert "(7 layers)" in next(line for line in lines if line.startswith("Trainable parameters:"))  # ffn_in: gate, up
    tensors = load_file(str(result.run_dir / "adapter.safetensors"))
    assert tensors and all("lora_kernel_" in name for name in tensors), "only A and B train (tied embeddings frozen)"
    loaded = load_run(result.run_dir)
    assert not lora_layers(loaded.model) and not [w for w in loaded.model.weights if "lora" in w.name]
