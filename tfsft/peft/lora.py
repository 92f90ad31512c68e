"""LoRA (Hu et al., 2021) on the projections of any tfsft backbone, through Keras' own `enable_lora`.

A targeted `Dense` / `EinsumDense` computes x·(W + (alpha/r)·A·B) with W frozen
and A, B trained; B starts at zero, so training starts from the pretrained
model. Keras gives an `EinsumDense` kernel of shape (d₁, …, dₖ, n) the factors
A (d₁, …, dₖ, r) and B (r, n): a query kernel (D, H, K) gets A (D, H, r) and
B (r, K), a rank-r update per head that shares B across heads.

Layer roles → layer names (the layer's parent tells attention from feed-forward):

* query, key, value: `query`, `key`, `value` (Keras' multi-head attention in
  KerasHub BERT and GPT-2, Llama's attention, tfsft's `layers/`); T5
  `query_projector`, `key_projector`, `value_projector`.
* attention_output: `attention_output`; T5 `output_projector` inside attention.
* ffn_in: `feedforward_intermediate_dense` and Llama's `feedforward_gate_dense`;
  tfsft `intermediate_dense`; T5 `input_projector`, `gate_projector`.
* ffn_out: `feedforward_output_dense`; tfsft `output_dense`; T5
  `output_projector` inside the feed-forward.

Keras merges A·B into the kernel whenever a LoRA layer's weights are saved
(`save_weights`, `model.save`) and zeroes A and B when they are loaded, so a
run's `model.keras` is already the merged model: plain kernels, and a
backbone rebuilt from its arguments has no LoRA layers at all. The adapter
is kept in its own file (`tfsft.peft.adapter`).
"""

from __future__ import annotations

import keras

from tfsft.config import ConfigError, LoraConfig

ATTENTION_ROLES = {
    "query": ("query", "query_projector"),
    "key": ("key", "key_projector"),
    "value": ("value", "value_projector"),
    "attention_output": ("attention_output", "output_projector"),
}
FEED_FORWARD_ROLES = {
    "ffn_in": ("feedforward_intermediate_dense", "feedforward_gate_dense", "intermediate_dense",
               "input_projector", "gate_projector"),
    "ffn_out": ("feedforward_output_dense", "output_dense", "output_projector"),
}
PROJECTIONS = (keras.layers.Dense, keras.layers.EinsumDense)


def sublayers(layer):
    """(path, parent, child) for every layer below `layer`, each once, paths by layer names ("a/b/query")."""
    seen = set()

    def walk(parent, prefix):
        for child in parent._flatten_layers(include_self=False, recursive=False):  # what Keras' own walks use
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            yield path, parent, child
            yield from walk(child, f"{path}/")

    yield from walk(layer, "")


def role_of(parent, layer) -> str | None:
    """The LoRA role of a projection layer, from its name and whether its parent is an attention layer."""
    if not isinstance(layer, PROJECTIONS):
        return None
    roles = ATTENTION_ROLES if "Attention" in type(parent).__name__ else FEED_FORWARD_ROLES
    return next((role for role, names in roles.items() if layer.name in names), None)


def find_targets(backbone, targets) -> dict[str, list[tuple[str, keras.layers.Layer]]]:
    """Role → [(path, layer)] of the backbone's projections with that role, for each role in `targets`."""
    found: dict[str, list] = {role: [] for role in targets}
    for path, parent, layer in sublayers(backbone):
        role = role_of(parent, layer)
        if role in found:
            found[role].append((path, layer))
    return found


def enable_lora(backbone, config: LoraConfig) -> list[tuple[str, keras.layers.Layer]]:
    """Freezes every backbone weight, then adds trainable A, B (rank, alpha) to each targeted projection.

    Returns:
        (path, layer) of the LoRA layers, in the backbone's layer order.

    Raises:
        ConfigError: `model.lora.targets` names a role that matches no layer.
    """
    found = find_targets(backbone, config.targets)
    missing = [role for role, layers in found.items() if not layers]
    if missing:
        names = sorted({layer.name for _, _, layer in sublayers(backbone) if isinstance(layer, PROJECTIONS)})
        raise ConfigError("the config", [("model.lora.targets", (
            f"{', '.join(missing)} matches no layer of {type(backbone).__name__}; its Dense/EinsumDense layers are "
            f"named {', '.join(names) or '(none)'}"))])
    for weight in backbone.weights:
        weight.trainable = False
    chosen = [(path, layer) for path, parent, layer in sublayers(backbone) if role_of(parent, layer) in found]
    for _, layer in chosen:
        layer.enable_lora(config.rank, lora_alpha=config.alpha)  # (KerasHub's Backbone.enable_lora drops alpha)
        for weight in layer.weights:
            weight.trainable = weight.name.startswith("lora_kernel_")  # W and the bias stay frozen
    return chosen


def lora_layers(model) -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) of the layers of `model` with LoRA enabled."""
    return [(path, layer) for path, _, layer in sublayers(model) if getattr(layer, "lora_enabled", False)]


def base_kernel(layer):
    """The frozen W of a LoRA layer (its `kernel` property adds (alpha/r)·A·B)."""
    (kernel,) = [w for w in layer.weights if w.name == "kernel"]
    return kernel
