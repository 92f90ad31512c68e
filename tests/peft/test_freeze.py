"""train.freeze: frozen weights are unchanged after training steps and have no optimizer state."""

from __future__ import annotations

import math

import keras
import keras_hub
import numpy as np
import pytest

from tests.conftest import tiny_text_config
from tests.peft.tiny import classifier, tiny_bert
from tfsft.config import ConfigError, FreezeConfig
from tfsft.experiment import config_from_mapping
from tfsft.peft.freeze import freeze
from tfsft.peft.setup import TrainableWeights
from tfsft.training import train


class WatchWeights(keras.callbacks.Callback):
    """Each weight's value and trainability before training, the optimizer's variables after."""

    def on_train_begin(self, logs=None):
        self.before = {w.path: (np.array(w.numpy()), w.trainable) for w in self.model.weights}

    def on_train_end(self, logs=None):
        self.after = {w.path: np.array(w.numpy()) for w in self.model.weights}
        self.optimizer_elements = sum(math.prod(v.shape) for v in self.model.optimizer.variables)
        self.trainable_elements = sum(math.prod(v.shape) for v in self.model.trainable_variables)


EMBEDDINGS = {"token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm"}


@pytest.mark.parametrize("freeze_config, frozen_layers", [
    ({"embeddings": True}, EMBEDDINGS),
    ({"layers": 1}, {"transformer_layer_0"}),
    ({"backbone": True}, EMBEDDINGS | {"transformer_layer_0", "transformer_layer_1", "pooled_dense"}),
])
def test_frozen_weights_are_unchanged_and_get_no_optimizer_state(tmp_path, tiny_vocab, freeze_config, frozen_layers):
    config = tiny_text_config(tmp_path, tiny_vocab, max_steps=2, eval_every_steps=2)
    config.model.num_layers = 2
    config.train.freeze = FreezeConfig(**freeze_config)
    watch = WatchWeights()
    lines = []
    train(config, log=lines.append, callbacks=[watch])
    frozen = {path for path, (_, trainable) in watch.before.items() if not trainable}
    assert {path.split("/")[0] for path in frozen} == frozen_layers  # paths: <backbone layer>/.../<weight>
    assert {path for path in watch.before if path.split("/")[0] in frozen_layers} == frozen, "all their weights"
    for path, (value, _) in watch.before.items():
        changed = not np.array_equal(watch.after[path], value)
        assert changed == (path not in frozen) or path.startswith("pooled_dense/"), path  # mean pooling: no pooler
    # Adam: m and v per trainable weight, plus a few scalars (iterations, learning rate)
    assert 2 * watch.trainable_elements <= watch.optimizer_elements <= 2 * watch.trainable_elements + 8
    assert any(line.startswith("Trainable parameters:") and "frozen:" in line for line in lines)


def test_freezing_more_layers_than_the_backbone_has_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.freeze\.layers: BertBackbone has 2 transformer layers. "
                                          r"Received: 3"):
        freeze(tiny_bert(), FreezeConfig(layers=3))


def test_freezing_every_weight_is_an_error():
    backbone = keras_hub.models.LlamaBackbone(vocabulary_size=50, num_layers=1, num_query_heads=2,
                                              num_key_value_heads=1, hidden_dim=16, intermediate_dim=32)
    causal_lm = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)  # no weights besides the backbone's
    config = config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                                  "train": {"freeze": {"backbone": True}}})
    with pytest.raises(ConfigError, match=r"train\.freeze: freezes every weight of LlamaCausalLM"):
        TrainableWeights(causal_lm, backbone, config, log=lambda _: None)


def test_a_linear_probe_trains_only_the_head():
    backbone = tiny_bert()
    model = classifier(backbone)
    config = config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                                  "train": {"freeze": {"backbone": True}}})
    lines = []
    TrainableWeights(model, backbone, config, log=lines.append)
    assert {v.path for v in model.trainable_variables} == {"logits/kernel", "logits/bias"}
    total = sum(math.prod(w.shape) for w in model.weights)
    assert len(lines) == 1 and lines[0].startswith(f"Trainable parameters: 34 of {total:,} (")  # 16 x 2 + 2
    assert lines[0].endswith(f"; frozen: {backbone.name}")


@pytest.mark.parametrize("freeze_config, message", [
    ({"layers": -1}, "train.freeze.layers: must be >= 0. Received: -1"),
    ({"embedding": True}, "train.freeze.embedding: unknown key; did you mean embeddings?"),
])
def test_bad_freeze_settings_name_their_key(freeze_config, message):
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                             "train": {"freeze": freeze_config}})
    assert message in str(error.value)
