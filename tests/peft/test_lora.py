"""LoRA: roles found in every backbone, alpha per layer, the merged model equal to the unmerged one, bad targets."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest

from tests.peft.tiny import classifier, features, randomize_lora, tiny_bert
from tfsft.config import ConfigError, LoraConfig
from tfsft.experiment import config_from_mapping
from tfsft.layers import TransformerEncoderBackbone
from tfsft.peft.lora import enable_lora, find_targets, lora_layers

ROLES = ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]


def backbone_of(architecture: str):
    sizes = dict(vocabulary_size=50, num_layers=2, hidden_dim=16, intermediate_dim=32)
    if architecture == "bert":
        return tiny_bert()
    if architecture == "gpt2":
        return keras_hub.models.GPT2Backbone(num_heads=2, max_sequence_length=16, **sizes)
    if architecture == "llama":
        return keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **sizes)
    if architecture == "t5":
        return keras_hub.models.T5Backbone(num_heads=2, **sizes)
    return TransformerEncoderBackbone(num_heads=2, **sizes)


# Layers per role with 2 transformer layers: Llama's ffn_in is gate + up; T5 (gated) has 2 encoder and
# 2 decoder layers, the decoder with self- and cross-attention.
COUNTS = {"bert": dict.fromkeys(ROLES, 2), "gpt2": dict.fromkeys(ROLES, 2), "transformer": dict.fromkeys(ROLES, 2),
          "llama": {**dict.fromkeys(ROLES, 2), "ffn_in": 4},
          "t5": {"query": 6, "key": 6, "value": 6, "attention_output": 6, "ffn_in": 8, "ffn_out": 4}}


@pytest.mark.parametrize("architecture", sorted(COUNTS))
def test_every_role_is_found_in_every_backbone(architecture):
    found = find_targets(backbone_of(architecture), ROLES)
    assert {role: len(layers) for role, layers in found.items()} == COUNTS[architecture]
    paths = [path for layers in found.values() for path, _ in layers]
    assert len(set(paths)) == len(paths), "no layer has two roles"


def test_enable_lora_freezes_the_backbone_and_passes_alpha_to_each_layer():
    backbone = tiny_bert()
    model = classifier(backbone)
    chosen = enable_lora(backbone, LoraConfig(rank=4, alpha=12.0, targets=["query", "value", "ffn_out"]))
    assert [path.split("/")[-1] for path, _ in chosen] == ["query", "value", "feedforward_output_dense"] * 2
    assert all(layer.lora_rank == 4 and layer.lora_alpha == 12.0 for _, layer in chosen)
    trainable = {v.path for v in model.trainable_variables}
    assert {p for p in trainable if "lora" not in p} == {"logits/kernel", "logits/bias"}
    assert len(trainable) == 2 + 2 * len(chosen)  # the head, and A, B of each LoRA layer
    query = chosen[0][1]
    assert tuple(query.lora_kernel_a.shape) == (16, 2, 4) and tuple(query.lora_kernel_b.shape) == (4, 8)


@pytest.mark.parametrize("precision, atol", [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
def test_the_merged_model_equals_the_unmerged_one_and_holds_plain_kernels(tmp_path, precision, atol):
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    backbone = tiny_bert()
    model = classifier(backbone)
    enable_lora(backbone, LoraConfig(rank=2, alpha=4.0, targets=ROLES))
    x = features()
    base = np.asarray(model(x), np.float32)  # B = 0: the base model
    randomize_lora(model)
    unmerged = np.asarray(model(x), np.float32)
    assert np.abs(unmerged - base).max() > 10 * atol, "A·B changes the outputs (a lost merge would show)"
    model.save(tmp_path / "model.keras")  # what train() writes; Keras merges (alpha/r)·A·B into each kernel
    merged = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert not lora_layers(merged) and not [w for w in merged.weights if "lora" in w.name]
    assert len(merged.weights) == len(model.weights) - 2 * 6 * 2  # 6 roles x 2 layers, A and B each
    np.testing.assert_allclose(np.asarray(merged(x), np.float32), unmerged, atol=atol)
    plain = classifier(tiny_bert())
    plain.set_weights(merged.get_weights())  # the merged kernels alone reproduce the LoRA model
    np.testing.assert_allclose(np.asarray(plain(x), np.float32), unmerged, atol=atol)


def test_a_target_that_matches_no_layer_is_an_error_naming_the_key():
    inputs = keras.Input((4,))
    odd = keras.Model(inputs, keras.layers.Dense(3, name="mixer")(keras.layers.Dense(4, name="query")(inputs)))
    with pytest.raises(ConfigError, match=r"model\.lora\.targets: ffn_out matches no layer of Functional; its "
                                          r"Dense/EinsumDense layers are named mixer, query"):
        enable_lora(odd, LoraConfig(targets=["ffn_out"]))


@pytest.mark.parametrize("lora, message", [
    ({"rank": 0}, "model.lora.rank: must be a positive integer. Received: 0"),
    ({"alpha": -1}, "model.lora.alpha: must be > 0. Received: -1.0"),
    ({"targets": ["query", "mlp"]}, "model.lora.targets[1]: expected one of 'query', 'key'"),
    ({"targets": []}, "model.lora.targets: name at least one layer role"),
])
def test_bad_lora_settings_name_their_key(lora, message):
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                             "model": {"lora": lora}})
    assert message in str(error.value)


def test_lora_and_freeze_together_are_an_error():
    with pytest.raises(ConfigError, match=r"train\.freeze: not with model\.lora"):
        config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                             "model": {"lora": {}}, "train": {"freeze": {"embeddings": True}}})
