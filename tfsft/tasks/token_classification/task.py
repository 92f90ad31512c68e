"""Token classification from tagged words: named entities (IOB2 spans), or plain tags (part of speech, ...).

Data: CoNLL / CoNLL-U / word/TAG / JSON lines / TFDS sentences with one tag
per word, entity tags converted to IOB2, plain tags (`task.scheme: none`, or
detected) kept as they are (`tfsft.data.conll`). Alignment: each word is split into WordPiece
subwords; its label sits on the first subword and the other subwords get
`sample_weight` 0 (or, with `label_all_subwords`, the continuation label I-X);
long sentences become overlapping windows (`tfsft.tasks.token_classification.windows`).

Model: backbone → sequence_output (B, L, D) → dropout → Dense(C) per subword,
C = number of IOB2 labels. Loss: cross-entropy averaged over the labelled
positions, Σ w·CE / Σ w (targets in the datasets are label id + 1, 0 where
unlabelled, so metrics see the mask too). Validation: token accuracy and entity F1 (in-graph,
the checkpoint monitor). Evaluation: entity-level precision, recall and F1
(overall and per type, CoNLL scoring by seqeval) plus word accuracy, of the
tags decoded as the SavedModel decodes them (Viterbi over valid IOB2 by default).
Serving: raw sentences → words, tags and entity spans (`serving.py`).

Plain tags: the same model and loss; validation and the checkpoint monitor use
token accuracy; evaluation reports token accuracy and per-tag precision,
recall and F1; each word gets its most probable tag; the SavedModel returns
one tag per word (no spans), its words split by `task.word_splitter`.

Example configs::

    task: {name: token_classification, label_all_subwords: false}
    data: {files: {train: conll2003/train.txt, validation: conll2003/valid.txt}}

    task: {name: token_classification, scheme: none, word_splitter: penn_treebank}
    data: {files: {train: pos/train.conllu, validation: pos/dev.conllu}, tags_column: xpos}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import keras
import numpy as np
import tensorflow as tf

from tfsft.config import ConfigError
from tfsft.data.conll import TokenExamples, is_entity_tag, read_token_split, split_tag
from tfsft.data.pipeline import AUTOTUNE, TOKENIZE_BATCH, EncodedSplit
from tfsft.data.readers import DataError
from tfsft.models.backbones import sequence_output
from tfsft.models.casing import supports_casing, with_casing_embedding
from tfsft.tasks.token_classification.decoding import (
    EntityF1,
    TagAccuracy,
    TagCrossentropy,
    label_tables,
)
from tfsft.tasks.token_classification.serving import (
    TokenClassificationServingModule,
    decode_tags,
    tag_probabilities,
)
from tfsft.tasks.token_classification.windows import WordWindowEncoder
from tfsft.tasks.token_classification.words import WORD_SPLITTERS


@dataclass
class TokenClassificationOptions:
    """Options of `task: {name: token_classification}`.

    Attributes:
        labels: the tags in class-id order: IOB2 ("O", "B-PER", "I-PER", ...)
            or plain ("DT", "NN", ...); inferred from the training split when
            omitted ("O", then B-/I- of each type, types sorted; plain tags sorted).
        scheme: the data's tag scheme: "auto" (IOB1, IOB2 and BIOES prefixes all
            accepted; plain tags when no tag is O or prefixed), "iob1" / "iob2" /
            "bioes" to also check the tags follow it, or "none": plain tags.
        label_all_subwords: train on every subword (continuations of B-X get
            I-X) instead of only on each word's first subword.
        stride: subwords between the starts of overlapping windows of a
            sentence longer than `model.sequence_length - 2` (default: half).
        dropout: dropout rate before the per-token Dense layer.
        casing: add a learned embedding of each word's casing (lower, Title,
            UPPER, mIxed, numeric, other) to the backbone's input embeddings
            (`tfsft.models.casing`) — for uncased backbones, which otherwise
            cannot see capital letters. BERT-family backbones only.
        decoding: "viterbi" (the most probable tag sequence that is valid
            IOB2: no I-X after O or another type) or "argmax" (per word), for
            evaluation and serving of entity tags (plain tags: per word).
        word_splitter: how the SavedModel splits raw text into words, to match
            the training data: "default" (CoNLL-2003 style), "penn_treebank"
            ("didn't" → did n't) or "whitespace" (`tfsft.tasks.token_classification.words`).
    """

    name: str = "token_classification"
    labels: Optional[list[str]] = None
    scheme: Literal["auto", "iob1", "iob2", "bioes", "none"] = "auto"
    label_all_subwords: bool = False
    stride: Optional[int] = None
    dropout: float = 0.1
    casing: bool = False
    decoding: Literal["viterbi", "argmax"] = "viterbi"
    word_splitter: Literal["default", "penn_treebank", "whitespace"] = "default"

    def plain_labels(self) -> Optional[bool]:
        """Whether the tags are plain (not an entity scheme), when the options tell; None until the data does."""
        if self.scheme != "auto":
            return self.scheme == "none"
        return None if self.labels is None else not any(map(is_entity_tag, self.labels))

    def validate(self):
        errors = []
        if not 0.0 <= self.dropout < 1.0:
            errors.append(("dropout", f"must be in [0, 1). Received: {self.dropout}"))
        if self.stride is not None and self.stride <= 0:
            errors.append(("stride", f"must be > 0 or null. Received: {self.stride}"))
        if self.labels is not None:
            problems = plain_label_problems if self.plain_labels() else label_problems
            errors.extend(("labels", message) for message in problems(self.labels))
        return errors


def label_problems(labels: list[str]) -> list[str]:
    """What is wrong with an IOB2 label list (empty when nothing)."""
    problems = []
    if len(set(labels)) != len(labels):
        problems.append(f"must be unique. Received: {labels}")
    if "O" not in labels:
        problems.append(f"must include 'O'. Received: {labels}")
    for label in labels:
        try:
            prefix, kind = split_tag(label)
        except ValueError:
            prefix, kind = "?", ""
        if prefix not in ("O", "B", "I"):
            problems.append(f"{label!r} is not an IOB2 tag; expected O, B-<TYPE> or I-<TYPE>")
        elif prefix != "O" and {f"B-{kind}", f"I-{kind}"} - set(labels):
            problems.append(f"{label!r}: give both B-{kind} and I-{kind}")
    return problems


def plain_label_problems(labels: list[str]) -> list[str]:
    """What is wrong with a plain label list (empty when nothing)."""
    if len(set(labels)) != len(labels):
        return [f"must be unique. Received: {labels}"]
    return [] if len(labels) >= 2 else [f"needs at least 2 tags. Received: {labels}"]


def infer_labels(tag_lists: list[list[str]], declared: Optional[list[str]] = None) -> list[str]:
    """`O`, then `B-X`, `I-X` for each entity type X (sorted) seen or declared."""
    kinds = {split_tag(tag)[1] for tags in tag_lists for tag in tags if tag != "O"}
    kinds |= {split_tag(tag)[1] for tag in (declared or []) if tag != "O" and tag[:2] in ("B-", "I-")}
    return ["O"] + [f"{p}-{kind}" for kind in sorted(kinds) for p in "BI"]


class TokenClassificationTask:
    """Builds, trains, evaluates and serves a named-entity tagger, or a tagger of plain tags."""

    options_class = TokenClassificationOptions

    problem = "token_classification"

    def __init__(self, options: TokenClassificationOptions, data_config):
        self.options = options
        self.data = data_config
        self.labels: Optional[list[str]] = list(options.labels) if options.labels else None
        self.plain: Optional[bool] = options.plain_labels()  # None: told by the training data

    @property
    def default_monitor(self) -> str:
        return "val_accuracy" if self.plain else "val_entity_f1"

    # --- labels -----------------------------------------------------------
    def fit_labels(self, train: TokenExamples) -> None:
        """Fixes the tag vocabulary: from config, else from the training tags."""
        self.plain = train.scheme == "none"
        if self.labels is None:
            self.labels = sorted({tag for tags in train.tags for tag in tags}) if self.plain else \
                infer_labels(train.tags, train.label_names)
        if self.plain and len(self.labels) < 2:
            raise DataError(f"{train.source}: only the tag {self.labels[0]!r}; tagging needs at least 2")
        if not self.plain and len(self.labels) < 3:
            raise DataError(f"{train.source}: no entity tags found (only {self.labels}); NER needs B-/I- tags "
                            "(plain tags: set task.scheme: none)")
        self.targets(train)

    def targets(self, examples: TokenExamples) -> list[np.ndarray]:
        """Label ids per sentence; a tag outside the label set names its file and line."""
        index = {label: i for i, label in enumerate(self.labels)}
        out = []
        for i, tags in enumerate(examples.tags):
            try:
                out.append(np.array([index[tag] for tag in tags], np.int32))
            except KeyError:
                j = next(j for j, tag in enumerate(tags) if tag not in index)
                raise DataError(f"{examples.where(i, j)}: tag {tags[j]!r} is not in the label set {self.labels} "
                                "(labels come from the training split or task.labels)") from None
        return out

    def continuation_ids(self) -> list[int]:
        """For each label id, the id a non-first subword gets: B-X → I-X, others (and plain tags) unchanged."""
        index = {label: i for i, label in enumerate(self.labels)}
        return [index["I-" + label[2:]] if label.startswith("B-") and not self.plain else i
                for i, label in enumerate(self.labels)]

    def state(self) -> dict:
        return {"labels": self.labels, "scheme": "none" if self.plain else "iob2"}

    def load_state(self, state: dict) -> None:
        self.labels = state["labels"]
        self.plain = state.get("scheme") == "none"  # runs saved before plain tags existed are IOB2

    # --- data -------------------------------------------------------------
    def read(self, split: str) -> TokenExamples:
        return read_token_split(self.data, split, "none" if self.plain else self.options.scheme)

    def make_encoder(self, tokenizer, sequence_length: int) -> WordWindowEncoder:
        return WordWindowEncoder(tokenizer, sequence_length, self.options.stride, casing=self.options.casing)

    def encode(self, examples: TokenExamples, encoder: WordWindowEncoder, training: bool) -> EncodedSplit:
        """Windows with per-subword targets and weights, tokenized in-graph and cached.

        Targets are label id + 1 and 0 where a position has no label, because
        Keras gives compiled metrics no sample weights (see `TagAccuracy`).

        Weights: training → 1 on each word's first subword (every subword with
        `label_all_subwords`) in every window; evaluation → 1 on each word's
        first subword in the window that owns it, so each word counts once.
        """
        ids = self.targets(examples)
        lengths = [len(t) for t in examples.tokens]
        words = tf.RaggedTensor.from_row_lengths(tf.constant([w for s in examples.tokens for w in s]), lengths)
        labels = tf.RaggedTensor.from_row_lengths(tf.constant(np.concatenate(ids)), lengths)
        continuation = tf.constant(self.continuation_ids(), tf.int32)
        all_subwords = training and self.options.label_all_subwords
        feature_names = ["token_ids", "segment_ids", "padding_mask"] + ["token_casing"] * self.options.casing

        def windows(words, labels):
            encoded = encoder(words)
            word = encoded["token_word"]  # (NW, L), -1 off words
            label = tf.gather(labels.flat_values, tf.maximum(word, 0))
            first = encoded["token_first"]
            if all_subwords:
                weight = word >= 0
                label = tf.where(first, label, tf.gather(continuation, label))
            else:
                weight = first if training else first & encoded["token_owner"]
            features = {k: encoded[k] for k in feature_names}
            return features, tf.where(weight, label + 1, 0), tf.cast(weight, tf.float32)

        dataset = tf.data.Dataset.from_tensor_slices((words, labels)).ragged_batch(TOKENIZE_BATCH)
        tokenized = dataset.map(windows, num_parallel_calls=AUTOTUNE).cache()
        count = tokens = 0
        for features, _, _ in tokenized:
            count += int(tf.shape(features["token_ids"])[0])
            tokens += int(tf.reduce_sum(features["padding_mask"]))

        def trim(features, label, weight):  # one padded window → its real length
            length = tf.reduce_sum(features["padding_mask"])
            return {k: v[:length] for k, v in features.items()}, label[:length], weight[:length]

        examples_ds = tokenized.unbatch().map(trim)
        return EncodedSplit(examples_ds, count, 0, tokens / max(count, 1))

    # --- model ------------------------------------------------------------
    def build_model(self, backbone) -> keras.Model:
        names = list(backbone.input) + ["token_casing"] * self.options.casing
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}
        if not self.options.casing:
            sequence = sequence_output(backbone(inputs))  # (B, L, D)
        elif supports_casing(backbone):
            sequence = with_casing_embedding(backbone, inputs)
        else:
            raise ConfigError("the config", [("task.casing", f"needs a BERT-family backbone (token, position and segment "
                                               f"embeddings); {type(backbone).__name__} has none. Set it to false.")])
        sequence = keras.layers.Dropout(self.options.dropout, name="head_dropout")(sequence)
        logits = keras.layers.Dense(len(self.labels), dtype="float32", name="tag_logits")(sequence)  # (B, L, C)
        return keras.Model(inputs, logits, name="token_classifier")

    def loss(self):
        return TagCrossentropy()

    def metrics(self):
        return [TagAccuracy(name="accuracy")] + ([] if self.plain else [EntityF1(self.labels)])

    # --- evaluation ---------------------------------------------------------
    def predict_tags(self, model, encoder: WordWindowEncoder, sentences: list[list[str]],
                     batch_size: int) -> list[list[str]]:
        """IOB2 tags for tokenized sentences, exactly as the SavedModel computes them."""
        names = list(model.input)
        _, types, begins = label_tables(self.labels)
        types, begins = tf.constant(types, tf.int32), tf.constant(begins, tf.bool)
        viterbi = self.options.decoding == "viterbi" and not self.plain

        @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1)])
        def tag(words):
            return decode_tags(tag_probabilities(model, encoder, words, names), words, types, begins, viterbi)

        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # similar lengths per batch
        predictions: list = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            batch = [sentences[i] for i in order[start:start + batch_size]]
            words = tf.RaggedTensor.from_row_lengths(tf.constant([w for s in batch for w in s], tf.string),
                                                     [len(s) for s in batch])
            flat = tag(words).numpy()
            offset = 0
            for i, sentence in zip(order[start:start + batch_size], batch):
                predictions[i] = [self.labels[k] for k in flat[offset:offset + len(sentence)]]
                offset += len(sentence)
        return predictions

    def evaluate(self, model, examples: TokenExamples, split: EncodedSplit, encoder: WordWindowEncoder,
                 batch_size: int, out_dir: Path) -> dict:
        """Entity precision/recall/F1 (overall, per type), strict-IOB2 F1 and word accuracy;
        plain tags: word accuracy, macro F1 and precision/recall/F1 per tag.

        Prints the per-type (per-tag) table and writes it to `out_dir/entity_report.txt`
        (`out_dir/tag_report.txt`).
        """
        self.targets(examples)  # every gold tag must be in the label set
        predicted = self.predict_tags(model, encoder, examples.tokens, batch_size)
        metrics = (tag_metrics if self.plain else entity_metrics)(examples.tags, predicted)
        table = (format_tag_table if self.plain else format_entity_table)(metrics)
        print(table)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ("tag_report.txt" if self.plain else "entity_report.txt")).write_text(table + "\n", encoding="utf-8")
        return metrics

    # --- serving ------------------------------------------------------------
    def serving_module(self, model, encoder: WordWindowEncoder) -> TokenClassificationServingModule:
        return TokenClassificationServingModule(model, encoder, self.labels, self.options.decoding == "viterbi",
                                                entities=not self.plain,
                                                split=WORD_SPLITTERS[self.options.word_splitter])

    def sample_inputs(self) -> dict[str, list[str]]:
        """Sentences for the export check: entities, non-ASCII text, nothing, and one longer than any window."""
        return {"text": [
            "EU rejects German call to boycott British lamb.",
            "Peter Blackburn flew from Zürich to New York on Thursday.",
            "",
            " ".join(["The European Commission met in Brussels, said Peter Blackburn."] * 60),
        ]}


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """seqeval's entity precision/recall/F1 (overall and per type, CoNLL scoring), strict IOB2 F1, word accuracy."""
    from seqeval import metrics as sm
    from seqeval.scheme import IOB2

    report = sm.classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {kind: {"precision": float(r["precision"]), "recall": float(r["recall"]),
                       "f1": float(r["f1-score"]), "support": int(r["support"])}
                for kind, r in report.items() if not kind.endswith(" avg")}
    return {
        "examples": len(gold),
        "words": int(sum(len(t) for t in gold)),
        "precision": float(sm.precision_score(gold, predicted, zero_division=0)),
        "recall": float(sm.recall_score(gold, predicted, zero_division=0)),
        "f1": float(sm.f1_score(gold, predicted, zero_division=0)),
        "strict_f1": float(sm.f1_score(gold, predicted, mode="strict", scheme=IOB2, zero_division=0)),
        "token_accuracy": float(sm.accuracy_score(gold, predicted)),
        "per_type": per_type,
    }


def tag_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Word accuracy, and precision/recall/F1 per plain tag (scikit-learn), macro-averaged over the gold tags."""
    from sklearn import metrics as skm

    flat_gold = [tag for tags in gold for tag in tags]
    flat_predicted = [tag for tags in predicted for tag in tags]
    tags = sorted(set(flat_gold))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        flat_gold, flat_predicted, labels=tags, zero_division=0)
    return {
        "examples": len(gold),
        "words": len(flat_gold),
        "token_accuracy": float(skm.accuracy_score(flat_gold, flat_predicted)),
        "macro_f1": float(np.mean(f1)),
        "per_tag": {tag: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                    for tag, p, r, f, n in zip(tags, precision, recall, f1, support)},
    }


def _per_class_lines(heading: str, per_class: dict) -> list[str]:
    lines = [f"{heading:<10} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for kind, r in sorted(per_class.items()):
        lines.append(f"{kind:<10} {r['precision']:>9.4f} {r['recall']:>9.4f} {r['f1']:>9.4f} {r['support']:>8}")
    return lines


def format_tag_table(metrics: dict) -> str:
    """Per-tag precision / recall / F1 / support, then word accuracy and macro F1."""
    return "\n".join(_per_class_lines("tag", metrics["per_tag"]) + [
        f"word accuracy {metrics['token_accuracy']:.4f}; macro F1 {metrics['macro_f1']:.4f} over "
        f"{len(metrics['per_tag'])} tags"])


def format_entity_table(metrics: dict) -> str:
    """Per-type precision / recall / F1 / support, then the overall (micro) row."""
    lines = _per_class_lines("type", metrics["per_type"])
    support = sum(r["support"] for r in metrics["per_type"].values())
    lines.append(f"{'overall':<10} {metrics['precision']:>9.4f} {metrics['recall']:>9.4f} {metrics['f1']:>9.4f} "
                 f"{support:>8}")
    lines.append(f"word accuracy {metrics['token_accuracy']:.4f}; strict IOB2 F1 {metrics['strict_f1']:.4f}")
    return "\n".join(lines)
