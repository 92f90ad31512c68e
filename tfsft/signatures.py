"""Serving modules: a trained model plus its encoder as string-in tf.functions."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


class TextServingModule(tf.Module):
    """Strings → task answers, for `tf.saved_model.save`.

    Args:
        model: the trained Keras task model.
        encoder: the `TextEncoder` used in training.
        outputs: the task's `serving_outputs(model_outputs) -> dict`.
        pair: whether the signature takes a second text (`text_pair`).
    """

    def __init__(self, model, encoder, outputs: Callable, pair: bool):
        super().__init__(name="tfsft_serving")
        self.model = model
        self.encoder = encoder
        self._outputs = outputs
        self._input_names = list(model.input) if isinstance(model.input, dict) else None
        spec = tf.TensorSpec([None], tf.string, name="text")
        if pair:
            pair_spec = tf.TensorSpec([None], tf.string, name="text_pair")
            self.serve = tf.function(self._serve_pair, input_signature=[spec, pair_spec])
        else:
            self.serve = tf.function(self._serve_single, input_signature=[spec])

    def _run(self, text, text_pair=None):
        features, _ = self.encoder(text, text_pair)
        if self._input_names is not None:
            features = {k: features[k] for k in self._input_names}
        return self._outputs(self.model(features, training=False))

    def _serve_single(self, text):
        return self._run(text)

    def _serve_pair(self, text, text_pair):
        return self._run(text, text_pair)
