"""Weight precision for serving (`export.dtype`, `export.quantize`): the trained model, smaller.

* `with_dtype(model, "bfloat16")`: the same model rebuilt with every floating
  dtype policy set to `bfloat16` (weights stored and computed in bf16, half the
  bytes of float32), weights cast from the trained ones; `"float32"` gives a
  float32 model (e.g. from one trained in `mixed_bfloat16`, which stores float32
  weights but computes in bf16).
* `quantize(model, "int8")`: Keras' `Model.quantize` — every `Dense`,
  `EinsumDense` and (reversible) `Embedding` kernel int8 with one float scale
  per output channel (abs-max), and the inputs of each matmul quantized per
  token at call time, so the products run int8 × int8 → int32. `"int8_weight_only"` keeps the
  inputs in float and turns the int8 kernel back into float at each call
  (storage only). Layer norms, biases and position tables stay float.
"""

from __future__ import annotations

import keras
from keras import ops

FLOAT_POLICIES = {"float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16"}


def _set_policies(node, name: str):
    """The serialized model `node` with each floating dtype policy (a `DTypePolicy` or a
    layer's `"dtype"` string) renamed `name`."""
    if isinstance(node, list):
        return [_set_policies(item, name) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "DTypePolicy" and node.get("config", {}).get("name") in FLOAT_POLICIES:
        return {**node, "config": {**node["config"], "name": name}}
    return {key: name if key == "dtype" and isinstance(value, str) and value in FLOAT_POLICIES
            else _set_policies(value, name)
            for key, value in node.items()}


def with_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """`model` rebuilt with weights and computation in `dtype` ("float32" or "bfloat16").

    Raises:
        ValueError: the rebuilt model's weights do not line up with the original's.
    """
    config = _set_policies(keras.saving.serialize_keras_object(model), dtype)
    rebuilt = keras.saving.deserialize_keras_object(config)
    if len(rebuilt.weights) != len(model.weights):
        raise ValueError(f"export.dtype: rebuilding {model.name} in {dtype} gave {len(rebuilt.weights)} weights, "
                         f"not {len(model.weights)}")
    for new, old in zip(rebuilt.weights, model.weights):
        if tuple(new.shape) != tuple(old.shape):
            raise ValueError(f"export.dtype: weight {old.path} has shape {old.shape} in the model and {new.shape} "
                             f"rebuilt in {dtype}")
        new.assign(ops.cast(old.value, new.dtype))
    return rebuilt


QUANTIZABLE = (keras.layers.ReversibleEmbedding, keras.layers.Embedding, keras.layers.EinsumDense,
               keras.layers.Dense)  # a subclass before its base


def quantizable(layer) -> bool:
    """A Keras `Dense`, `EinsumDense`, `Embedding` or `ReversibleEmbedding`, or a subclass that keeps their
    `call` and `quantize`. (KerasHub's `ReversibleEmbedding`, the token table of its backbones, subclasses
    Keras' without changing it, and Keras' own type check would leave it in float.)"""
    for base in QUANTIZABLE:
        if isinstance(layer, base):
            return type(layer).call is base.call and type(layer).quantize is base.quantize
    return False


def quantize(model: keras.Model, mode: str) -> keras.Model:
    """Quantizes `model` in place (`mode`: "int8" or "int8_weight_only"); returns it."""
    config = None
    if mode == "int8_weight_only":
        config = keras.quantizers.Int8QuantizationConfig(weight_quantizer=None, activation_quantizer=None)
    model.quantize(None if config else "int8", config=config, filters=quantizable, type_check=False)
    return model
