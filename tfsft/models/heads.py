"""Layers shared by task heads."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfsft")
class SequencePooling(keras.layers.Layer):
    """Pools a sequence (B, T, D) into one vector (B, D).

    `mode="first"` takes position 0 (BERT's [CLS] slot); `mode="mean"` averages
    the real tokens: pooled = Σ_t m_t·h_t / Σ_t m_t, with m the padding mask.

    Args:
        mode: "first" or "mean".
    """

    def __init__(self, mode: str = "first", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("first", "mean"):
            raise ValueError(f"mode must be 'first' or 'mean'. Received: mode={mode!r}")
        self.mode = mode

    def call(self, sequence, padding_mask):
        if self.mode == "first":
            return sequence[:, 0, :]  # (B, D)
        mask = ops.cast(padding_mask, sequence.dtype)[:, :, None]  # (B, T, 1)
        total = ops.sum(sequence * mask, axis=1)  # (B, D)
        return total / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
