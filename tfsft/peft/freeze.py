"""Freezing parts of a backbone (`train.freeze`): its weights get no gradient and no optimizer state.

Freezing marks the *variables* non-trainable and leaves the layers' own
`trainable` flag alone, so nothing of it is saved with the model: a frozen
run's `model.keras`, or a preset made from it, fine-tunes normally later.
Keras builds the optimizer from `model.trainable_variables`, so Adam keeps no
moments for a frozen weight.

* embeddings: the backbone's own layers whose name has "embedding" in it
  (BERT: token, position, segment embeddings and `embeddings_layer_norm`;
  GPT-2, Llama, T5: the token (and position) embedding; tfsft's Transformer:
  `embeddings`). A tied output layer (Llama, GPT-2 LM) is the same matrix,
  so it is frozen too.
* layers: the first N transformer layers (T5 and tfsft's seq2seq: of the encoder).
* backbone: every backbone weight (a linear probe: only the task head trains).
"""

from __future__ import annotations

from tfsft.config import ConfigError, FreezeConfig


def transformer_layers(backbone) -> list:
    """The backbone's stack of transformer layers, input side first."""
    for name in ("transformer_layers", "encoder_transformer_layers"):  # KerasHub BERT/GPT-2/Llama; T5
        if hasattr(backbone, name):
            return list(getattr(backbone, name))
    encoder = getattr(backbone, "encoder", None)  # tfsft.layers backbones
    if hasattr(encoder, "encoder_layers"):
        return list(encoder.encoder_layers)
    raise ConfigError("the config", [("train.freeze.layers", f"{type(backbone).__name__} has no stack of "
                                                             "transformer layers tfsft knows")])


def embedding_layers(backbone) -> list:
    """The backbone's top-level layers with "embedding" in their name."""
    return [layer for layer in backbone._flatten_layers(include_self=False, recursive=False)
            if "embedding" in layer.name and layer.weights]


def frozen_layers(backbone, config: FreezeConfig) -> list:
    """The layers `config` freezes (the backbone itself for `backbone: true`).

    Raises:
        ConfigError: `train.freeze.layers` is more than the backbone has.
    """
    if config.backbone:
        return [backbone]
    layers = embedding_layers(backbone) if config.embeddings else []
    if config.layers:
        stack = transformer_layers(backbone)
        if config.layers > len(stack):
            raise ConfigError("the config", [("train.freeze.layers", (
                f"{type(backbone).__name__} has {len(stack)} transformer layers. Received: {config.layers}"))])
        layers += stack[:config.layers]
    return layers


def freeze(backbone, config: FreezeConfig) -> list:
    """Marks every weight of the layers `config` names non-trainable; returns those layers."""
    layers = frozen_layers(backbone, config)
    for layer in layers:
        for weight in layer.weights:
            weight.trainable = False
    return layers
