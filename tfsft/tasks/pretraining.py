"""Pretraining tasks: masked LM (BERT) and causal LM (GPT-2) from a text corpus.

* `masked_lm`: each document → WordPiece ids, cut into pieces of at most
  `sequence_length - 2` tokens, each wrapped as `[CLS] piece [SEP]` (nothing is
  truncated). Masks are drawn per training batch (dynamic masking, RoBERTa
  style) by KerasHub's `MaskedLMMaskGenerator` in the task's `batch_transform`:
  per sequence `ceil(mask_rate · n)` of its n maskable tokens are selected
  (never `[CLS]`, `[SEP]` or padding), and of those 80 % become `[MASK]`, 10 %
  a random token, 10 % stay. Validation masks are drawn once, so every
  evaluation scores the same positions. Model: KerasHub `BertMaskedLM`
  (backbone + `MaskedLMHead` tied to the token embedding).
* `causal_lm`: documents → byte-level BPE ids joined by `<|endoftext|>`, packed
  into contiguous blocks of `L + 1 = sequence_length + 1` tokens that overlap
  by one (inputs `t[kL : kL+L]`, targets `t[kL+1 : kL+L+1]`), so every token
  but the last partial block is used; that remainder is counted in the task
  state. Model: KerasHub `GPT2CausalLM` (logits from the tied embedding).

Metrics on the held-out split: token accuracy and perplexity
`exp(Σ_i w_i · CE_i / Σ_i w_i)` over the predicted positions.

`prepare_tokenizer(config, task)` trains the tokenizer files when they do not
exist yet; `tfsft.training.pretrain` runs it, trains, and saves the backbone +
tokenizer as a KerasHub preset folder `<run_dir>/preset/` that `tfsft train`
fine-tunes via `model.backbone: <run_dir>/preset`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfsft.data.corpus import Corpus, read_corpus
from tfsft.data.pipeline import EncodedSplit, evaluation_dataset
from tfsft.data.readers import DataError

TOKENIZE_BATCH = 1024
# tf.data functions here are plain TensorFlow (no Python control flow), so AutoGraph,
# which re-reads the source file at trace time, is skipped.
_plain = tf.autograph.experimental.do_not_convert


def _check_rate(errors: list, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        errors.append((name, f"must be in [0, 1]. Received: {value}"))


@dataclass
class MaskedLMOptions:
    """Options of `task: {name: masked_lm}`.

    Attributes:
        documents: how plain-text corpus files divide into documents
            ("lines" or "paragraphs", see `tfsft.data.corpus`).
        extra_train_files: more corpus files read after `data.files.train`.
        vocabulary_size: WordPiece vocabulary size when `tfsft pretrain`
            trains the tokenizer.
        mask_rate: fraction of maskable tokens selected per sequence.
        mask_token_rate: fraction of the selected replaced by `[MASK]`.
        random_token_rate: fraction of the selected replaced by a random
            token (the rest stay unchanged).
    """

    name: str = "masked_lm"
    documents: Literal["lines", "paragraphs"] = "lines"
    extra_train_files: list[str] = field(default_factory=list)
    vocabulary_size: int = 8000
    mask_rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1

    def validate(self):
        errors = []
        if self.vocabulary_size <= 5:
            errors.append(("vocabulary_size", f"must exceed the 5 reserved tokens. Received: {self.vocabulary_size}"))
        if not 0.0 < self.mask_rate < 1.0:
            errors.append(("mask_rate", f"must be in (0, 1). Received: {self.mask_rate}"))
        _check_rate(errors, "mask_token_rate", self.mask_token_rate)
        _check_rate(errors, "random_token_rate", self.random_token_rate)
        if self.mask_token_rate + self.random_token_rate > 1.0:
            errors.append(("random_token_rate", ("mask_token_rate + random_token_rate must be <= 1. "
                           f"Received: {self.mask_token_rate} + {self.random_token_rate}")))
        return errors


@dataclass
class CausalLMOptions:
    """Options of `task: {name: causal_lm}`.

    Attributes:
        documents: how plain-text corpus files divide into documents.
        extra_train_files: more corpus files read after `data.files.train`.
        vocabulary_size: byte-level BPE vocabulary size (including the 256
            bytes and `<|endoftext|>`) when `tfsft pretrain` trains it.
    """

    name: str = "causal_lm"
    documents: Literal["lines", "paragraphs"] = "paragraphs"
    extra_train_files: list[str] = field(default_factory=list)
    vocabulary_size: int = 8000

    def validate(self):
        if self.vocabulary_size <= 257:
            return [("vocabulary_size", f"must exceed 256 bytes + <|endoftext|>. Received: {self.vocabulary_size}")]
        return []


def tokenize_documents(tokenizer, texts: list[str]) -> tf.RaggedTensor:
    """Token ids of each document, tokenized in-graph in batches: (N, None) int32."""
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(TOKENIZE_BATCH)
    dataset = dataset.map(_plain(lambda t: tf.cast(tokenizer(t), tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
    parts = list(dataset)
    return tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]


def token_statistics(model, dataset: tf.data.Dataset) -> dict:
    """Weighted token cross-entropy and accuracy of `model` over `(x, y[, w])` batches.

    Returns `cross_entropy` = Σ w·CE / Σ w (nats), `perplexity` = exp of it,
    `accuracy` = Σ w·[argmax = y] / Σ w and `tokens` = Σ w.
    """

    @tf.function(reduce_retracing=True)
    def step(x, y, w):
        logits = tf.cast(model(x, training=False), tf.float32)  # (B, T, V)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (B, T)
        hit = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)
        return tf.reduce_sum(ce * w), tf.reduce_sum(hit * w), tf.reduce_sum(w)

    totals = np.zeros(3, np.float64)
    for batch in dataset:
        x, y = batch[0], batch[1]
        w = tf.cast(batch[2], tf.float32) if len(batch) > 2 else tf.ones(tf.shape(y), tf.float32)
        totals += [float(v) for v in step(x, y, w)]
    ce_sum, hits, tokens = totals
    if tokens == 0:
        raise DataError("no tokens to evaluate in the held-out split")
    ce = float(ce_sum / tokens)
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "accuracy": float(hits / tokens), "tokens": int(tokens)}


class _PretrainingTask:
    """What masked and causal LM share: corpus reading, no labels, no SavedModel."""

    problem = "pretraining"
    default_monitor = "val_loss"

    def __init__(self, options, data_config):
        self.options = options
        self.data = data_config
        self.encoder = None
        self.stats: dict = {}

    def read(self, split: str) -> Corpus:
        extra = tuple(self.options.extra_train_files) if split == "train" else ()
        return read_corpus(self.data, split, self.options.documents, extra)

    def fit_labels(self, train: Corpus) -> None:
        """Language modelling has no label vocabulary."""

    def state(self) -> dict:
        return {"corpus": self.stats}

    def load_state(self, state: dict) -> None:
        self.stats = state.get("corpus", {})

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    def metrics(self):
        return []  # KerasHub's compile adds a weighted token accuracy

    def serving_module(self, model, encoder):
        raise ValueError(f"task {self.options.name!r} is exported as a KerasHub preset (`tfsft pretrain` writes "
                         "<run_dir>/preset), not as a TF Serving SavedModel; fine-tune it with `tfsft train`")

    def sample_inputs(self):
        return self.serving_module(None, None)


class MaskedLMEncoder:
    """Documents → `[CLS] piece [SEP]` sequences, plus the mask generator.

    Args:
        tokenizer: a KerasHub `BertTokenizer`.
        sequence_length: the longest sequence, `[CLS]` and `[SEP]` included.
        options: `MaskedLMOptions` (mask rates).
    """

    def __init__(self, tokenizer, sequence_length: int, options: MaskedLMOptions):
        if sequence_length < 3:
            raise ValueError(f"model.sequence_length must be >= 3 for [CLS] x [SEP]. Received: {sequence_length}")
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.pad_id = tokenizer.pad_token_id
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        # ceil(rate · n) are selected per sequence of n ≤ L - 2 maskable tokens.
        self.max_predictions = math.ceil(options.mask_rate * (sequence_length - 2))
        self.masker = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=tokenizer.vocabulary_size(),
            mask_selection_rate=options.mask_rate,
            mask_token_id=self.mask_id,
            mask_selection_length=self.max_predictions,
            unselectable_token_ids=[self.cls_id, self.sep_id, self.pad_id],
            mask_token_rate=options.mask_token_rate,
            random_token_rate=options.random_token_rate,
            dtype="float32",
            _allow_python_workflow=False,  # the TF Text path in eager calls too, as inside tf.data
        )

    def sequences(self, texts: list[str]) -> tf.RaggedTensor:
        """`[CLS] piece [SEP]` rows, (S, None) int32; long documents give several pieces."""
        ids = tokenize_documents(self.tokenizer, texts)
        values, lengths = ids.flat_values.numpy(), ids.row_lengths().numpy()
        width = self.sequence_length - 2
        rows = []
        for doc, start in zip(lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]])):
            for offset in range(0, max(int(doc), 1), width):
                piece = values[start + offset: start + min(offset + width, doc)]
                rows.append(np.concatenate([[self.cls_id], piece, [self.sep_id]]).astype(np.int32))
        return tf.RaggedTensor.from_row_lengths(np.concatenate(rows), [len(r) for r in rows])

    def mask(self, token_ids) -> dict:
        """Masks (B, T) ids: `token_ids` (B, T), `mask_positions`/`mask_ids`/`mask_weights` (B, P)."""
        out = self.masker(token_ids)
        return {
            "token_ids": tf.cast(out["token_ids"], tf.int32),
            "mask_positions": tf.cast(out["mask_positions"], tf.int32),
            "mask_ids": tf.cast(out["mask_ids"], tf.int32),
            "mask_weights": tf.cast(out["mask_weights"], tf.float32),
        }


def _bert_features(token_ids, padding_mask):
    return {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": padding_mask}


def rows_dataset(rows: tf.RaggedTensor) -> tf.data.Dataset:
    """One dense (T_i,) int32 tensor per row of a ragged (S, None) tensor."""
    return tf.data.Dataset.from_tensor_slices((rows.to_tensor(), rows.row_lengths())).map(_plain(lambda ids, n: ids[:n]))


class MaskedLMTask(_PretrainingTask):
    """BERT masked-LM pretraining with dynamic masking."""

    options_class = MaskedLMOptions

    def make_encoder(self, tokenizer, sequence_length: int) -> MaskedLMEncoder:
        self.encoder = MaskedLMEncoder(tokenizer, sequence_length, self.options)
        return self.encoder

    def encode(self, examples: Corpus, encoder: MaskedLMEncoder, training: bool) -> EncodedSplit:
        rows = encoder.sequences(examples.texts)
        split = "train" if training else "validation"
        self.stats[split] = {"documents": len(examples), "sequences": int(rows.nrows()),
                             "tokens": int(tf.size(rows.flat_values))}
        mean = float(tf.reduce_mean(tf.cast(rows.row_lengths(), tf.float32)))
        if training:  # masks are drawn per batch in batch_transform
            dataset = rows_dataset(rows).map(_plain(lambda ids: _bert_features(ids, tf.ones_like(ids)))).cache()
        else:  # one draw, cached, so every validation pass scores the same positions
            @_plain
            def draw(batch):  # (B, T) padded ids → masked examples
                padding_mask = tf.cast(tf.not_equal(batch, encoder.pad_id), tf.int32)
                masked = encoder.mask(batch)
                features = dict(_bert_features(masked["token_ids"], padding_mask),
                                mask_positions=masked["mask_positions"])
                return features, masked["mask_ids"], masked["mask_weights"]

            @_plain
            def trim(features, mask_ids, mask_weights):  # drop the batch padding again
                length = tf.reduce_sum(features["padding_mask"])
                features = {k: v if k == "mask_positions" else v[:length] for k, v in features.items()}
                return features, mask_ids, mask_weights

            dataset = (rows_dataset(rows).padded_batch(TOKENIZE_BATCH, padding_values=encoder.pad_id)
                       .map(draw).unbatch().map(trim).cache())
        return EncodedSplit(dataset, int(rows.nrows()), 0, mean)

    @_plain
    def batch_transform(self, features):
        """Padded batch (B, T) → (inputs with masked ids + `mask_positions`, `mask_ids`, `mask_weights`)."""
        masked = self.encoder.mask(features["token_ids"])
        inputs = dict(features, token_ids=masked["token_ids"], mask_positions=masked["mask_positions"])
        return inputs, masked["mask_ids"], masked["mask_weights"]

    def build_model(self, backbone) -> keras.Model:
        if not isinstance(backbone, keras_hub.models.BertBackbone):
            raise ValueError(  # noqa: TRY004 (a config mismatch; the CLI reports ValueErrors)
                "task masked_lm needs a BERT backbone (model.architecture: bert). "
                f"Received: {type(backbone).__name__}")
        return keras_hub.models.BertMaskedLM(backbone, preprocessor=None)

    def evaluate(self, model, examples, split: EncodedSplit, encoder, batch_size: int, out_dir: Path,
                 verbose: int = 0) -> dict:
        stats = token_statistics(model, evaluation_dataset(split, pad_id=encoder.pad_id, batch_size=batch_size))
        return {"masked_token_accuracy": stats["accuracy"], "perplexity": stats["perplexity"],
                "cross_entropy": stats["cross_entropy"], "masked_tokens": stats["tokens"]}


class CausalLMEncoder:
    """Documents → one `<|endoftext|>`-separated token stream → packed blocks.

    Args:
        tokenizer: a KerasHub `GPT2Tokenizer` (byte-level BPE).
        sequence_length: L, the tokens a block feeds the model.
    """

    def __init__(self, tokenizer, sequence_length: int):
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.end_id = tokenizer.end_token_id
        self.pad_id = tokenizer.pad_token_id

    def stream(self, texts: list[str]) -> np.ndarray:
        """`doc₁ <eot> doc₂ <eot> … docₙ <eot>` as one (N,) int32 array."""
        ids = tokenize_documents(self.tokenizer, texts)
        ends = tf.fill([ids.nrows(), 1], self.end_id)
        return tf.concat([ids, tf.cast(ends, tf.int32)], axis=1).flat_values.numpy()

    def pack(self, stream: np.ndarray) -> tuple[np.ndarray, int]:
        """Blocks (n, L + 1) with stride L, and the tokens left over after them.

        n = floor((N - 1) / L); block k = stream[kL : kL + L + 1]. The inputs
        of the blocks, `stream[:nL]`, plus the leftover `stream[nL:]` are the
        whole stream.
        """
        length = self.sequence_length
        blocks = (len(stream) - 1) // length
        index = np.arange(blocks)[:, None] * length + np.arange(length + 1)[None, :]  # (n, L + 1)
        return stream[index].astype(np.int32), len(stream) - blocks * length


class CausalLMTask(_PretrainingTask):
    """GPT-2 causal-LM pretraining on packed blocks."""

    options_class = CausalLMOptions

    def make_encoder(self, tokenizer, sequence_length: int) -> CausalLMEncoder:
        self.encoder = CausalLMEncoder(tokenizer, sequence_length)
        return self.encoder

    def encode(self, examples: Corpus, encoder: CausalLMEncoder, training: bool) -> EncodedSplit:
        stream = encoder.stream(examples.texts)
        blocks, leftover = encoder.pack(stream)
        if len(blocks) == 0:
            raise DataError(f"{examples.source}: {len(stream)} tokens make no block of sequence_length + 1 = "
                            f"{encoder.sequence_length + 1}; use a longer corpus or a shorter model.sequence_length")
        split = "train" if training else "validation"
        self.stats[split] = {"documents": len(examples), "tokens": len(stream), "blocks": len(blocks),
                             "tokens_in_final_partial_block": int(leftover)}

        @_plain
        def features(block):  # (L + 1,) → inputs (L,), next-token targets (L,)
            inputs = block[:-1]
            return {"token_ids": inputs, "padding_mask": tf.ones_like(inputs)}, block[1:]

        dataset = tf.data.Dataset.from_tensor_slices(blocks).map(features).cache()
        return EncodedSplit(dataset, len(blocks), 0, float(encoder.sequence_length))

    def build_model(self, backbone) -> keras.Model:
        if not isinstance(backbone, keras_hub.models.GPT2Backbone):
            raise ValueError(  # noqa: TRY004 (a config mismatch; the CLI reports ValueErrors)
                "task causal_lm needs a GPT-2 backbone (model.architecture: gpt2). "
                f"Received: {type(backbone).__name__}")
        return keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)

    def evaluate(self, model, examples, split: EncodedSplit, encoder, batch_size: int, out_dir: Path,
                 verbose: int = 0) -> dict:
        stats = token_statistics(model, evaluation_dataset(split, pad_id=encoder.pad_id, batch_size=batch_size))
        return {"token_accuracy": stats["accuracy"], "perplexity": stats["perplexity"],
                "cross_entropy": stats["cross_entropy"], "tokens": stats["tokens"]}


# ----------------------------------------------------------------------------
# The tokenizer `tfsft pretrain` (tfsft.training.pretrain) trains first
# ----------------------------------------------------------------------------


def prepare_tokenizer(config, task, log: Callable[[str], None] = print):
    """Trains the tokenizer files named in `config.model` when they do not exist yet.

    `model.vocabulary` (and `model.merges` for GPT-2) are where the files are
    written; existing files are reused (so a resumed run keeps its ids).
    """
    from tfsft.models.tokenizer_training import train_byte_level_bpe, train_wordpiece

    model = config.model
    wanted = [model.vocabulary] + ([model.merges] if model.architecture == "gpt2" else [])
    if all(Path(p).expanduser().exists() for p in wanted):
        log(f"Using the existing tokenizer files {', '.join(wanted)}")
        return
    corpus = task.read("train")
    size = config.task.vocabulary_size
    if model.architecture == "gpt2":
        got = train_byte_level_bpe(corpus.texts, size, Path(model.vocabulary).expanduser(),
                                   Path(model.merges).expanduser())
        log(f"Trained a byte-level BPE ({got} tokens) on {len(corpus):,} documents → {model.vocabulary}, {model.merges}")
    else:
        got = train_wordpiece(corpus.texts, size, Path(model.vocabulary).expanduser(), lowercase=model.lowercase)
        log(f"Trained a WordPiece vocabulary ({got} tokens; asked {size}) on {len(corpus):,} documents "
            f"→ {model.vocabulary}")
