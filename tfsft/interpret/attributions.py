"""Integrated gradients over input embeddings, and word pieces → words.

Integrated gradients (Sundararajan, Taly and Yan, 2017) attribute a scalar
output F to each input coordinate along the straight path from a baseline x'
to the input x:

    IG_i = (x_i − x'_i) · ∫₀¹ ∂F(x' + α(x − x'))/∂x_i dα
         ≈ (x_i − x'_i) · Σ_k w_k · ∂F(x' + α_k(x − x'))/∂x_i,   α_k = k/m, k = 0..m

with the trapezoid weights w = (½, 1, …, 1, ½)/m for m = `steps`. The
attribution of token t is Σ_d IG_(t,d) over its embedding's D coordinates, and
a word's is the sum over its word pieces. Completeness: Σ_t IG_t = F(x) − F(x')
for the exact integral; the trapezoid sum misses it by O(1/m²) for a smooth F,
which `IntegratedGradients.completeness_error` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf


@dataclass
class IntegratedGradients:
    """Attributions of T outputs to L tokens.

    Attributes:
        attributions: (T, L) float, Σ_d IG per token, one row per output.
        outputs: (T,) F(x), the outputs at the input.
        baseline_outputs: (T,) F(x'), the outputs at the baseline.
    """

    attributions: np.ndarray
    outputs: np.ndarray
    baseline_outputs: np.ndarray

    @property
    def completeness_error(self) -> np.ndarray:
        """(T,) |Σ_t IG_t − (F(x) − F(x'))|: how far the sum is from the integral's."""
        return np.abs(self.attributions.sum(axis=1) - (self.outputs - self.baseline_outputs))


def trapezoid_weights(steps: int) -> np.ndarray:
    """(steps + 1,) weights of the trapezoid rule on [0, 1] at α_k = k/steps."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1. Received: steps={steps}")
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2
    return weights


def integrated_gradients(function: Callable, inputs, baseline, steps: int = 50,
                         batch_size: int = 16) -> IntegratedGradients:
    """Integrated gradients of `function` from `baseline` to `inputs` (see the module doc).

    Args:
        function: embeddings (N, L, D) → outputs (N, T), each row computed from
            its own embeddings only (no batch statistics).
        inputs, baseline: (L, D) embeddings x and x'.
        steps: m, the number of intervals of the path (m + 1 gradient evaluations).
        batch_size: interpolation points per forward/backward pass.

    Example:
        >>> ig = integrated_gradients(lambda x: tf.reduce_sum(x ** 2, axis=[1, 2])[:, None], x, tf.zeros_like(x))
        >>> ig.attributions.sum(), ig.outputs - ig.baseline_outputs   # equal up to O(1/steps²)
    """
    inputs = tf.convert_to_tensor(inputs, tf.float32)
    baseline = tf.convert_to_tensor(baseline, tf.float32)
    delta = inputs - baseline  # (L, D)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = trapezoid_weights(steps).astype(np.float32)

    @tf.function(reduce_retracing=True)
    def weighted_gradients(alpha, weight):  # (n,), (n,) → outputs (n, T), Σ_n w_n ∂F_t/∂x_n (T, L, D)
        points = baseline[None] + alpha[:, None, None] * delta[None]  # (n, L, D)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(points)
            outputs = tf.cast(function(points), tf.float32)  # (n, T)
            totals = tf.unstack(tf.reduce_sum(outputs * weight[:, None], axis=0))  # T scalars
        gradients = tf.stack([tf.reduce_sum(tape.gradient(total, points), axis=0) for total in totals])
        return outputs, gradients

    points = len(alphas)
    batch_size = min(batch_size, points)
    padded = -points % batch_size  # the last batch is filled up with weight-0 points: one traced shape
    alphas, weights = np.pad(alphas, (0, padded), constant_values=1.0), np.pad(weights, (0, padded))
    path_outputs, summed = [], 0.0
    for start in range(0, len(alphas), batch_size):
        outputs, gradients = weighted_gradients(tf.constant(alphas[start:start + batch_size]),
                                                tf.constant(weights[start:start + batch_size]))
        path_outputs.append(outputs.numpy())
        summed = summed + gradients
    attributions = tf.reduce_sum(summed * delta[None], axis=-1).numpy()  # (T, L)
    path = np.concatenate(path_outputs)[:points]  # (m + 1, T), α = 0 … 1
    return IntegratedGradients(attributions.astype(np.float64), path[-1].astype(np.float64),
                               path[0].astype(np.float64))


def wordpiece_words(tokens: list[str], special: set[str], suffix: str = "##") -> tuple[list[str], np.ndarray]:
    """Words from WordPiece tokens: a piece that starts with `suffix` continues the word before it.

    Args:
        tokens: the L tokens as strings, e.g. ["[CLS]", "grip", "##ping", "film", "[SEP]"].
        special: tokens that belong to no word ([CLS], [SEP], [PAD]).
        suffix: the tokenizer's continuation mark (`suffix_indicator`).

    Returns:
        `(words, token_word)`: the words (pieces joined, "##" dropped) and
        (L,) int, the word of each token, -1 for special tokens.
    """
    words: list[str] = []
    token_word = np.full(len(tokens), -1, np.int64)
    for t, token in enumerate(tokens):
        if token in special:
            continue
        if token.startswith(suffix) and t > 0 and token_word[t - 1] >= 0:
            words[-1] += token[len(suffix):]
        else:
            words.append(token)
        token_word[t] = len(words) - 1
    return words, token_word


def word_attributions(token_attributions: np.ndarray, token_word: np.ndarray, num_words: int) -> np.ndarray:
    """Per-word sums (T, W) of per-token attributions (T, L); tokens with word -1 are left out."""
    token_attributions = np.atleast_2d(token_attributions)
    out = np.zeros((token_attributions.shape[0], num_words))
    keep = token_word >= 0
    for row, values in zip(out, token_attributions):
        np.add.at(row, token_word[keep], values[keep])
    return out
