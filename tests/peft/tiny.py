"""Tiny models for the parameter-efficient fine-tuning tests."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np

from tfsft.tasks.text_classification import TextClassificationOptions, TextClassificationTask


def tiny_bert(hidden: int = 16, num_layers: int = 2, vocabulary_size: int = 60, dtype=None):
    """A KerasHub BERT with `num_layers` layers of width `hidden`, 2 heads, no dropout, 16 positions."""
    return keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=2,
                                         hidden_dim=hidden, intermediate_dim=2 * hidden, max_sequence_length=16,
                                         dropout=0.0, dtype=dtype)


def classifier(backbone) -> keras.Model:
    """tfsft's text classifier (backbone → first-token pooling → Dense "logits") on `backbone`."""
    task = TextClassificationTask(TextClassificationOptions(labels=["neg", "pos"], pooling="first", dropout=0.0), None)
    return task.build_model(backbone)


def features(batch: int = 3, length: int = 7, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[0, length - 2:] = 0
    return {"token_ids": rng.integers(1, 60, (batch, length)).astype("int32") * mask, "padding_mask": mask,
            "segment_ids": np.zeros((batch, length), "int32")}


def randomize_lora(model, seed: int = 1) -> None:
    """A and B of every LoRA layer set to random values (B starts at zero, which would hide a merge error)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.name.startswith("lora_kernel_"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape))
