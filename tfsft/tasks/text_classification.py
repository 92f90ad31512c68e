"""Text classification and regression: single sentences or sentence pairs.

Model: backbone → pooled vector (B, D) → dropout → Dense(num_labels | 1).
Loss: cross-entropy (optional label smoothing, class weights through
`sample_weight`) or mean squared error for regression (STS-B style scores).
Serving: raw strings in → label id, label name and probabilities (or score).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import keras
import numpy as np
import tensorflow as tf

from tfsft import evaluation
from tfsft.data.pipeline import (
    EncodedSplit,
    TextEncoder,
    encode_examples,
    predict_split,
)
from tfsft.data.readers import DataError, TextExamples, read_split
from tfsft.models.backbones import sequence_output
from tfsft.models.heads import SequencePooling


@keras.saving.register_keras_serializable(package="tfsft")
class MatthewsCorrelation(keras.metrics.Metric):
    """Matthews correlation of argmax predictions, over all batches seen (multi-class: Gorodkin 2004).

    With C the (K, K) confusion matrix, t = its row sums (true), p = its column
    sums (predicted), c = trace(C) and s = ΣC:
    MCC = (c·s − p·t) / √((s² − p·p)(s² − t·t)); 0 when a factor is 0. Equals
    `sklearn.metrics.matthews_corrcoef`. Lets training pick the checkpoint by
    CoLA's official metric (`train.monitor: val_mcc`).
    """

    def __init__(self, num_classes: int, name: str = "mcc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="confusion",
                                           dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        predictions = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        weights = None if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        self.confusion.assign_add(tf.math.confusion_matrix(labels, predictions, num_classes=self.num_classes,
                                                           weights=weights, dtype=tf.float32))

    def result(self):
        c = tf.cast(self.confusion, tf.float64)
        true, predicted, total = tf.reduce_sum(c, 1), tf.reduce_sum(c, 0), tf.reduce_sum(c)
        covariance = tf.linalg.trace(c) * total - tf.reduce_sum(predicted * true)
        denominator = tf.sqrt((total ** 2 - tf.reduce_sum(predicted ** 2)) * (total ** 2 - tf.reduce_sum(true ** 2)))
        return tf.cast(tf.math.divide_no_nan(covariance, denominator), tf.float32)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@dataclass
class TextClassificationOptions:
    """Options of `task: {name: text_classification}`.

    Attributes:
        labels: the label values as they appear in the data, in class-id order;
            inferred (sorted) from the training split when omitted.
        label_names: display names returned by the SavedModel (default: labels).
        pooling: "first" ([CLS] vector), "mean" (masked mean) or "pooler"
            (BERT's pretrained tanh pooler).
    """

    name: str = "text_classification"
    labels: Optional[list[str]] = None
    label_names: Optional[list[str]] = None
    pooling: Literal["first", "mean", "pooler"] = "first"
    dropout: float = 0.1
    label_smoothing: float = 0.0
    class_weights: Optional[dict[str, float]] = None

    def validate(self):
        errors = []
        if not 0.0 <= self.dropout < 1.0:
            errors.append(("dropout", f"must be in [0, 1). Received: {self.dropout}"))
        if not 0.0 <= self.label_smoothing < 1.0:
            errors.append(("label_smoothing", f"must be in [0, 1). Received: {self.label_smoothing}"))
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            errors.append(("labels", f"must be unique. Received: {self.labels}"))
        if self.labels is not None and len(self.labels) < 2:
            errors.append(("labels", f"needs at least 2 labels. Received: {self.labels}"))
        if self.label_names is not None and self.labels is not None and len(self.label_names) != len(self.labels):
            errors.append(("label_names", f"needs one name per label ({len(self.labels)}). Received: {self.label_names}"))
        for label, weight in (self.class_weights or {}).items():
            if self.labels is not None and label not in self.labels:
                errors.append((f"class_weights.{label}", f"not a label; expected one of {self.labels}"))
            if weight <= 0:
                errors.append((f"class_weights.{label}", f"must be > 0. Received: {weight}"))
        return errors


@dataclass
class TextRegressionOptions:
    """Options of `task: {name: text_regression}` (one real-valued score)."""

    name: str = "text_regression"
    pooling: Literal["first", "mean", "pooler"] = "first"
    dropout: float = 0.1

    def validate(self):
        if not 0.0 <= self.dropout < 1.0:
            return [("dropout", f"must be in [0, 1). Received: {self.dropout}")]
        return []


def pooled_features(backbone, pooling: str, dropout: float):
    """Functional inputs (from the backbone) and the pooled, dropped-out vector."""
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in backbone.input}
    outputs = backbone(inputs)
    if pooling == "pooler":
        if not (isinstance(outputs, dict) and "pooled_output" in outputs):
            raise ValueError(f"task.pooling: this backbone has no pooler. Received: pooling={pooling!r}")
        pooled = outputs["pooled_output"]
    else:
        mode = "first" if pooling == "first" else "mean"
        pooled = SequencePooling(mode, name="pooling")(sequence_output(outputs), inputs["padding_mask"])
    return inputs, keras.layers.Dropout(dropout, name="head_dropout")(pooled)


@keras.saving.register_keras_serializable(package="tfsft")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy from integer labels with label smoothing ε.

    loss = -Σ_c q_c log p_c, q = (1-ε)·onehot(y) + ε/C.
    """

    def __init__(self, label_smoothing: float = 0.0, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        one_hot = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


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


class TextClassificationTask:
    """Builds, trains, evaluates and serves a text classifier."""

    options_class = TextClassificationOptions

    problem = "classification"
    default_monitor = "val_accuracy"

    def __init__(self, options: TextClassificationOptions, data_config):
        self.options = options
        self.data = data_config
        self.labels: Optional[list[str]] = list(options.labels) if options.labels else None
        self.label_names: Optional[list[str]] = list(options.label_names) if options.label_names else None

    # --- labels -----------------------------------------------------------
    def fit_labels(self, train: TextExamples) -> None:
        """Fixes the label vocabulary: from config, the source, or the data."""
        if self.labels is None:
            if train.label_names:
                self.labels = list(train.label_names)
            else:
                self.labels = sorted({str(label) for label in train.labels})
        if len(self.labels) < 2:
            raise DataError(f"{train.source}: found only the label(s) {self.labels}; classification needs 2 or more")
        if self.label_names is None:
            self.label_names = list(self.labels)

    def targets(self, examples: TextExamples) -> np.ndarray:
        """Class ids; an unknown label is an error naming its file and line."""
        index = {label: i for i, label in enumerate(self.labels)}
        ids = np.empty(len(examples), np.int32)
        for i, label in enumerate(examples.labels):
            key = str(label)
            if key not in index:
                raise DataError(f"{examples.where(i)}: label {key!r} is not in the label set {self.labels}")
            ids[i] = index[key]
        return ids

    def weights(self, targets: np.ndarray) -> Optional[np.ndarray]:
        if not self.options.class_weights:
            return None
        table = np.array([self.options.class_weights.get(label, 1.0) for label in self.labels], np.float32)
        return table[targets]

    def state(self) -> dict:
        return {"labels": self.labels, "label_names": self.label_names}

    def load_state(self, state: dict) -> None:
        self.labels, self.label_names = state["labels"], state["label_names"]

    # --- data -------------------------------------------------------------
    def read(self, split: str) -> TextExamples:
        return read_split(self.data, split)

    def make_encoder(self, tokenizer, sequence_length: int) -> TextEncoder:
        return TextEncoder(tokenizer, sequence_length)

    def encode(self, examples: TextExamples, encoder: TextEncoder, training: bool) -> EncodedSplit:
        targets = self.targets(examples)
        return encode_examples(
            encoder, examples.texts, examples.pairs, targets, self.weights(targets) if training else None
        )

    # --- model ------------------------------------------------------------
    def build_model(self, backbone) -> keras.Model:
        inputs, pooled = pooled_features(backbone, self.options.pooling, self.options.dropout)
        logits = keras.layers.Dense(len(self.labels), dtype="float32", name="logits")(pooled)
        return keras.Model(inputs, logits, name="text_classifier")

    def loss(self):
        if self.options.label_smoothing:
            return SparseCrossentropyWithSmoothing(self.options.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), MatthewsCorrelation(len(self.labels))]

    # --- evaluation ---------------------------------------------------------
    def evaluate(self, model, examples: TextExamples, split: EncodedSplit, encoder: TextEncoder,
                 batch_size: int, out_dir: Path) -> dict:
        """Metrics on an encoded split; writes the confusion matrix to `out_dir`."""
        targets = self.targets(examples)
        logits = predict_split(model, split, pad_id=encoder.pad_id, batch_size=batch_size)
        probabilities = tf.nn.softmax(logits).numpy()
        metrics = evaluation.classification_metrics(targets, probabilities, self.label_names)
        evaluation.plot_confusion_matrix(metrics["confusion_matrix"], self.label_names, out_dir / "confusion_matrix.png")
        return metrics

    # --- serving ------------------------------------------------------------
    def serving_module(self, model, encoder: TextEncoder) -> TextServingModule:
        return TextServingModule(model, encoder, self.serving_outputs, pair=self.data.text_pair_column is not None)

    def sample_inputs(self) -> dict[str, list[str]]:
        """Inputs for the export check (nothing; the last one is longer than any model)."""
        texts = ["a gripping, beautifully acted film", "dull and far too long", "ok", "", "x " * 600]
        if self.data.text_pair_column is None:
            return {"text": texts}
        return {"text": texts, "text_pair": list(reversed(texts))}

    def serving_outputs(self, logits) -> dict:
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        names = tf.constant(self.label_names)
        return {"label_id": label_id, "label": tf.gather(names, label_id), "probabilities": probabilities}


class TextRegressionTask(TextClassificationTask):
    """One score per text (or pair), trained with mean squared error."""

    options_class = TextRegressionOptions

    problem = "regression"
    default_monitor = "val_loss"

    def __init__(self, options: TextRegressionOptions, data_config):
        self.options = options
        self.data = data_config
        self.labels = self.label_names = None

    def fit_labels(self, train: TextExamples) -> None:
        self.targets(train)

    def targets(self, examples: TextExamples) -> np.ndarray:
        scores = np.empty(len(examples), np.float32)
        for i, label in enumerate(examples.labels):
            try:
                scores[i] = float(label)
            except (TypeError, ValueError):
                raise DataError(f"{examples.where(i)}: label {label!r} is not a number; regression needs scores") from None
        return scores

    def weights(self, targets):
        return None

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def build_model(self, backbone) -> keras.Model:
        inputs, pooled = pooled_features(backbone, self.options.pooling, self.options.dropout)
        score = keras.layers.Dense(1, dtype="float32", name="score")(pooled)
        return keras.Model(inputs, score, name="text_regressor")

    def loss(self):
        return keras.losses.MeanSquaredError()

    def metrics(self):
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def evaluate(self, model, examples, split, encoder, batch_size, out_dir) -> dict:
        targets = self.targets(examples)
        scores = predict_split(model, split, pad_id=encoder.pad_id, batch_size=batch_size)[:, 0]
        return evaluation.regression_metrics(targets, scores)

    def serving_outputs(self, scores) -> dict:
        return {"score": tf.cast(scores, tf.float32)[:, 0]}
