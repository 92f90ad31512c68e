"""Attention maps per layer and head: what each token's query attends to.

For layer l and head h, A[l, h, i, j] = softmax_j(q_i · k_j / √d_k) over the
real (unpadded) keys j: row i sums to 1. The maps are the attention
probabilities KerasHub's `TransformerEncoder` returns (before attention dropout).
"""

from __future__ import annotations

import numpy as np

from tfsft.interpret.split import EmbeddingSplit


def attention_maps(split: EmbeddingSplit, features: dict) -> np.ndarray:
    """The attention probabilities of one example, (layers, heads, L, L) over its L real tokens.

    Args:
        split: the model split at its embedding.
        features: the model inputs of a batch of one example, each (1, L') with
            L ≤ L' real tokens (`padding_mask`).
    """
    length = int(np.sum(np.asarray(features["padding_mask"])[0]))
    _, maps = split.forward(split.embed(features), features, attention=True)
    return np.stack([np.asarray(m, np.float32)[0, :, :length, :length] for m in maps])  # (N, H, L, L)
