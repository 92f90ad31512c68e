"""A trained BERT-family task model split at its token embedding: the model as a function of embeddings.

Integrated gradients interpolate between embeddings, which no token id
reaches, so the model is run from the token-embedding output on, with its own
(trained) layers:

    e = E_tok[token_ids]                                            (B, L, D)   `embed`
    h = LayerNorm(e + E_pos + E_seg[segment_ids] [+ E_casing[token_casing]])
    h, A_l = encoder layer l (h, padding_mask), l = 1..N            A_l: (B, H, L, L)
    out = Dense(pool(h))  (B, C) or (B, 1)   text classification / regression
        = Dense(h)        (B, L, C)          token classification     `forward`

Dropout is left out (inference). The split is computed on a float32 copy of
the model (`float32_copy`): a model trained in mixed bfloat16 keeps about three
significant digits, too few for the completeness check of the attributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import keras
import keras_hub
import numpy as np

from tfsft.models.casing import supports_casing

SUPPORTED_TASKS = ("text_classification", "text_regression", "token_classification")


class InterpretError(ValueError):
    """A run, text or option that interpretation cannot handle; the message says what was expected."""


def _float32_policies(config):
    """`config` (nested dicts and lists) with every serialized dtype policy set to float32."""
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config.get("config"), dict):
        return {**config, "config": {**config["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in config.items()}


def float32_copy(model: keras.Model) -> keras.Model:
    """The functional `model` rebuilt with float32 compute in every layer, with the same weights."""
    copy = keras.Model.from_config(_float32_policies(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


@dataclass
class EmbeddingSplit:
    """The task model from token embeddings on (see the module doc).

    Build it with `EmbeddingSplit.of(model, task_name, pooling)`.

    Example:
        >>> split = EmbeddingSplit.of(model, "text_classification", pooling="first")
        >>> logits = split.forward(split.embed(features), features)   # = model(features)
    """

    token_embedding: keras.layers.Layer
    position_embedding: keras.layers.Layer
    segment_embedding: keras.layers.Layer
    layer_norm: keras.layers.Layer
    transformer_layers: list
    head: Callable  # (sequence (B, L, D), features) → model outputs
    casing_embedding: Optional[keras.layers.Layer] = None

    @classmethod
    def of(cls, model: keras.Model, task_name: str, pooling: str = "first") -> EmbeddingSplit:
        """Finds the embedding, encoder and head layers of a tfsft task model.

        Args:
            model: a text classification / regression or token classification
                model on a KerasHub `BertBackbone` (or its kin), with or
                without the casing embedding of NER.
            task_name: the run's `task.name`.
            pooling: the run's `task.pooling` (classification and regression).
        """
        if task_name not in SUPPORTED_TASKS:
            raise InterpretError(f"task {task_name!r} is not supported; expected one of {', '.join(SUPPORTED_TASKS)}")
        layers = {layer.name: layer for layer in model.layers}
        backbones = [layer for layer in model.layers if supports_casing(layer)]
        if backbones:  # the backbone is one nested model
            parts = backbones[0]
            encoder_layers = list(parts.transformer_layers)
            get = lambda name: getattr(parts, name)  # noqa: E731
        elif all(name in layers for name in ("token_embedding", "position_embedding", "segment_embedding",
                                              "embeddings_layer_norm")):  # NER with casing: backbone layers inline
            encoder_layers = [layer for layer in model.layers if isinstance(layer, keras_hub.layers.TransformerEncoder)]
            get = layers.__getitem__
        else:
            raise InterpretError(f"model {model.name!r} has no BERT-family backbone (token, position and segment "
                                 "embeddings, as KerasHub's BertBackbone); explanations need one")
        return cls(get("token_embedding"), get("position_embedding"), get("segment_embedding"),
                   get("embeddings_layer_norm"), encoder_layers, _head(layers, task_name, pooling, get),
                   layers.get("casing_embedding"))

    def embed(self, features: dict):
        """Token embeddings (B, L, D) of `features["token_ids"]`."""
        return self.token_embedding(features["token_ids"])

    def forward(self, embeddings, features: dict, attention: bool = False):
        """The model's outputs from token embeddings (B, L, D) and the other features.

        Returns:
            The outputs; with `attention`, also the attention probabilities of
            each layer, a list of N (B, H, L, L) tensors (query × key).
        """
        x = embeddings + self.position_embedding(embeddings) + self.segment_embedding(features["segment_ids"])
        if self.casing_embedding is not None:
            x = x + self.casing_embedding(features["token_casing"])
        x = self.layer_norm(x)
        maps = []
        for layer in self.transformer_layers:
            if attention:
                x, scores = layer(x, padding_mask=features["padding_mask"], return_attention_scores=True)
                maps.append(scores)
            else:
                x = layer(x, padding_mask=features["padding_mask"])
        outputs = self.head(x, features)
        return (outputs, maps) if attention else outputs

    def check(self, model: keras.Model, features: dict, tolerance: float = 1e-3) -> None:
        """Raises unless `forward(embed(features))` reproduces `model(features)` (the split misses no layer)."""
        expected = np.asarray(model({k: features[k] for k in model.input}, training=False), np.float32)
        got = np.asarray(self.forward(self.embed(features), features), np.float32)
        same_shape = expected.shape == got.shape
        difference = float(np.max(np.abs(expected - got))) if same_shape and expected.size else 0.0
        if not same_shape or difference > tolerance * max(1.0, float(np.max(np.abs(expected)))):
            raise InterpretError(f"model {model.name!r}: recomputing it from its embeddings gave outputs "
                                 f"{difference:.3g} away from the model's own; its layers are not the BERT task "
                                 "model explanations know")


def _head(layers: dict, task_name: str, pooling: str, backbone_part) -> Callable:
    """The part of the model after the encoder: (sequence (B, L, D), features) → outputs."""
    if task_name == "token_classification":
        dense = layers["tag_logits"]
        return lambda sequence, features: dense(sequence)  # (B, L, C)
    dense = layers["score" if task_name == "text_regression" else "logits"]
    if pooling == "pooler":
        pooled_dense = backbone_part("pooled_dense")
        return lambda sequence, features: dense(pooled_dense(sequence[:, 0, :]))
    pool = layers["pooling"]  # SequencePooling: [CLS] or the masked mean
    return lambda sequence, features: dense(pool(sequence, features["padding_mask"]))
