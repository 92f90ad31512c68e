"""Machine translation: encoder–decoder training, beam-search decoding, BLEU.

Model: source ids → encoder; `[start] y_1 … y_n` → decoder (teacher forcing)
→ logits over the vocabulary for `y_1 … y_n [end]`. The from-scratch
`TransformerSeq2SeqBackbone` ties its output projection to the token table
(`logits = h @ Eᵀ`); KerasHub T5 uses `T5Seq2SeqLM`'s head (same tying, with
T5's d^-0.5 rescale).
Loss: label-smoothed cross-entropy per target token, padding masked out
through `sample_weight`, averaged over real target tokens.
Evaluation: beam search (`tfsft.tasks.translation.search`) → detokenized text → sacreBLEU
BLEU and chrF against the raw references; sample translations are written
beside the metrics (`translations.tsv`).
Serving: source strings in → translations out; tokenization, the search loop
and detokenization all run in the SavedModel's graph.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfsft.data.parallel import read_translation_split
from tfsft.data.pipeline import TOKENIZE_BATCH, EncodedSplit
from tfsft.data.readers import TextExamples
from tfsft.layers import TransformerSeq2SeqBackbone
from tfsft.models.backbones import load_seq2seq_backbone
from tfsft.models.tokenizer_training import START, train_sentencepiece
from tfsft.tasks.translation.search import beam_search, greedy_search


@dataclass
class TranslationOptions:
    """Options of `task: {name: translation}`.

    Attributes:
        label_smoothing: ε of the label-smoothed cross-entropy (Szegedy et
            al., 2016; 0.1 in Vaswani et al., 2017).
        beam_size: hypotheses kept per sentence when decoding (1 = greedy).
        length_penalty: α of the GNMT length penalty ((5 + |Y|) / 6) ** α.
        max_decode_length: most target tokens generated per sentence.
        prefix: text put before every source sentence, e.g. T5's
            "translate English to German: ".
        tokenizer_model: SentencePiece algorithm when a vocabulary is trained
            on the data (`model.vocabulary_size`): "unigram" or "bpe".
        samples: how many sample translations `translations.tsv` holds
            (0 = all).
    """

    name: str = "translation"
    label_smoothing: float = 0.1
    beam_size: int = 4
    length_penalty: float = 0.6
    max_decode_length: int = 128
    prefix: str = ""
    tokenizer_model: Literal["unigram", "bpe"] = "unigram"
    samples: int = 0

    def validate(self):
        errors = []
        if not 0.0 <= self.label_smoothing < 1.0:
            errors.append(("label_smoothing", f"must be in [0, 1). Received: {self.label_smoothing}"))
        for name in ("beam_size", "max_decode_length"):
            if getattr(self, name) <= 0:
                errors.append((name, f"must be > 0. Received: {getattr(self, name)}"))
        if self.length_penalty < 0:
            errors.append(("length_penalty", f"must be >= 0. Received: {self.length_penalty}"))
        if self.samples < 0:
            errors.append(("samples", f"must be >= 0. Received: {self.samples}"))
        return errors


@keras.saving.register_keras_serializable(package="tfsft")
class SequenceCrossentropy(keras.losses.Loss):
    """Per-token cross-entropy from integer labels with label smoothing ε.

    loss_t = (1 - ε)·(−log p(y_t)) + ε·(−(1/V)·Σ_v log p(v)), computed from
    log p = logits − logsumexp(logits) without a one-hot tensor. Reduction
    `mean_with_sample_weight` divides by the number of real target tokens.
    Shapes: y_true (B, T) int, y_pred (B, T, V) logits → (B, T).
    """

    def __init__(self, label_smoothing: float = 0.0, name="sequence_crossentropy",
                 reduction="mean_with_sample_weight", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)  # (B, T, V)
        log_z = tf.reduce_logsumexp(logits, axis=-1)  # (B, T)
        true_logit = tf.gather(logits, tf.cast(y_true, tf.int32), batch_dims=2)  # (B, T)
        nll = log_z - true_logit
        if not self.label_smoothing:
            return nll
        uniform = log_z - tf.reduce_mean(logits, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="tfsft")
class TokenAccuracy(keras.metrics.Mean):
    """Share of real target tokens predicted exactly (argmax), padding excluded.

    Keras passes no `sample_weight` to compiled (unweighted) metrics, so the
    padding is recognised from the labels: the pipeline pads them with 0,
    and id 0 is `<pad>` (never a label) in every vocabulary used here.
    Shapes: y_true (B, T), y_pred (B, T, V).
    """

    def __init__(self, name="token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        correct = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), y_true), tf.float32)
        return super().update_state(correct, sample_weight=tf.cast(tf.not_equal(y_true, 0), tf.float32))


@keras.saving.register_keras_serializable(package="tfsft")
class TransformerTranslator(keras.Model):
    """`TransformerSeq2SeqBackbone` + tied output projection → logits (B, T_d, V).

    logits = decoder_output @ Eᵀ with E the shared token table
    (`backbone.token_embedding(h, reverse=True)`).

    Args:
        backbone: a `tfsft.layers.TransformerSeq2SeqBackbone`.
    """

    def __init__(self, backbone: TransformerSeq2SeqBackbone, **kwargs):
        inputs = backbone.input
        hidden = backbone(inputs)["decoder_sequence_output"]  # (B, T_d, D)
        logits = backbone.token_embedding(hidden, reverse=True)  # (B, T_d, V)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def decoding_inputs(model, token_ids, padding_mask, max_length):
    """The state and step function that `tfsft.tasks.translation.search` searches with.

    Both decode one position a step with key/value caches: `TransformerTranslator`
    through `TransformerSeq2SeqBackbone.decoder_cache` / `decode_step`
    (state: source mask, per-layer self- and cross-attention caches), KerasHub
    `T5Seq2SeqLM` through `call_decoder_with_cache`. The step writes the
    self-attention cache at position t.

    Args:
        model: a `TransformerTranslator` or `keras_hub.models.T5Seq2SeqLM`.
        token_ids: (B, T_e) int32 source ids; padding_mask: (B, T_e).
        max_length: generated tokens at most (the cache length is this + 1).

    Returns:
        `(state, step_fn)` as described in `tfsft.tasks.translation.search`.
    """
    if isinstance(model, TransformerTranslator):
        backbone = model.backbone
        memory = backbone.encode(token_ids, padding_mask)  # (B, T_e, D)
        self_cache, cross_cache = backbone.decoder_cache(memory, max_length + 1)  # cross K/V computed once
        state = {"mask": padding_mask, "self_cache": self_cache, "cross_cache": cross_cache}

        def step(tokens, t, state):
            hidden, self_cache = backbone.decode_step(tokens[:, t:t + 1], t, state["self_cache"],
                                                      state["cross_cache"], state["mask"])  # (N, 1, D)
            return backbone.token_embedding(hidden[:, 0, :], reverse=True), {**state, "self_cache": self_cache}

        return state, step

    if isinstance(model, keras_hub.models.T5Seq2SeqLM):
        backbone = model.backbone
        memory = model.call_encoder(token_ids, padding_mask)  # (B, T_e, D)
        head_dim = backbone.key_value_dim or backbone.hidden_dim // backbone.num_heads
        batch = tf.shape(token_ids)[0]

        def zeros(length):
            return tf.zeros([batch, backbone.num_layers, 2, length, backbone.num_heads, head_dim], model.compute_dtype)

        start = tf.zeros([batch, 1], tf.int32)  # T5's decoder starts from pad (0)
        _, _, self_cache, cross_cache = model.call_decoder_with_cache(
            memory, padding_mask, start, zeros(max_length + 1), 0, zeros(tf.shape(token_ids)[1]), 0
        )  # fills the cross-attention cache once
        state = {"memory": memory, "mask": padding_mask, "self_cache": self_cache, "cross_cache": cross_cache}

        def step(tokens, t, state):
            logits, _, self_cache, _ = model.call_decoder_with_cache(
                state["memory"], state["mask"], tokens[:, t:t + 1], state["self_cache"], t,
                state["cross_cache"], None,
            )
            return logits[:, 0, :], {**state, "self_cache": self_cache}

        return state, step
    raise TypeError(f"no decoding for model type {type(model).__name__}")


class TranslationEncoder(keras.layers.Layer):
    """Source (and target) strings → encoder–decoder inputs.

    encoder: `prefix + source` pieces, cut to `sequence_length - 1`, + [end];
    decoder input: [start] + target pieces (cut to `sequence_length - 1`);
    labels: target pieces + [end] (the decoder input shifted left).
    The start id is `<s>` for a SentencePiece model trained here and pad (0)
    for T5, as in its pre-training.

    Runs in graph mode (tf.data, `tf.function`, the SavedModel): eagerly,
    KerasHub tokenizers take their pure-Python path and return lists.

    Args:
        tokenizer: a KerasHub `SentencePieceTokenizer` (or `T5Tokenizer`).
        sequence_length: longest encoder or decoder sequence.
        prefix: text prepended to every source.
    """

    def __init__(self, tokenizer, sequence_length: int, prefix: str = "", **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.prefix = prefix
        self.pad_id = tokenizer.token_to_id("<pad>")
        self.end_id = tokenizer.token_to_id("</s>")
        self.start_id = self.pad_id if isinstance(tokenizer, keras_hub.models.T5Tokenizer) else tokenizer.token_to_id(START)

    def _pieces(self, text):
        pieces = self.tokenizer(text)  # (B, None) ragged int32 (graph mode: KerasHub's TF path)
        return tf.cast(pieces[:, :self.sequence_length - 1], tf.int32), pieces.row_lengths() > self.sequence_length - 1

    def tokenize(self, source, target=None):
        """Ragged (B, None) pieces: `encoder_token_ids` (and `decoder_token_ids`, `labels`) + truncated (B,)."""
        if self.prefix:
            source = tf.strings.join([self.prefix, source])
        src, truncated = self._pieces(source)
        batch = tf.shape(source)[:1]
        end = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([batch, [1]], 0), self.end_id))
        out = {"encoder_token_ids": tf.concat([src, end], axis=1)}
        if target is not None:
            tgt, target_truncated = self._pieces(target)
            start = tf.RaggedTensor.from_tensor(tf.fill(tf.concat([batch, [1]], 0), self.start_id))
            out["decoder_token_ids"] = tf.concat([start, tgt], axis=1)
            out["labels"] = tf.concat([tgt, end], axis=1)
            truncated = tf.logical_or(truncated, target_truncated)
        return out, truncated

    def call(self, source):
        """Strings (B,) → {encoder_token_ids, encoder_padding_mask} (B, T_e) int32."""
        pieces, _ = self.tokenize(source)
        ids = pieces["encoder_token_ids"]
        return {"encoder_token_ids": ids.to_tensor(self.pad_id),
                "encoder_padding_mask": tf.cast(tf.sequence_mask(ids.row_lengths()), tf.int32)}


class TranslationServingModule(tf.Module):
    """Source strings → translations, for `tf.saved_model.save`.

    `serve(text)` returns `translation` (B,) strings and `score` (B,) the
    length-normalised log-probability of each translation. An empty or
    whitespace-only text translates to "" with score 0.
    """

    def __init__(self, model, encoder: TranslationEncoder, options: TranslationOptions):
        super().__init__(name="tfsft_translation")
        self.model = model
        self.encoder = encoder
        self.options = options
        self.serve = tf.function(self._translate, input_signature=[tf.TensorSpec([None], tf.string, name="text")])

    def _translate(self, text):
        features = self.encoder(text)
        max_length = self.options.max_decode_length
        state, step = decoding_inputs(self.model, features["encoder_token_ids"], features["encoder_padding_mask"],
                                      max_length)
        ids = {"start_id": self.encoder.start_id, "end_id": self.encoder.end_id, "pad_id": self.encoder.pad_id,
                   "max_length": max_length}
        batch = tf.shape(text)[0]
        if self.options.beam_size == 1:
            tokens, score, length = greedy_search(step, state, batch, **ids)
            score = score / tf.cast(tf.maximum(length, 1), tf.float32)
        else:
            tokens, _, score, _ = beam_search(step, state, batch, beam_size=self.options.beam_size,
                                              length_penalty_alpha=self.options.length_penalty, **ids)
        keep = tf.logical_and(tf.not_equal(tokens, self.encoder.end_id), tf.not_equal(tokens, self.encoder.pad_id))
        pieces = tf.ragged.boolean_mask(tokens, keep)  # (B, None) without end and pad
        text_out = tf.reshape(self.encoder.tokenizer.detokenize(pieces), [-1])
        blank = tf.equal(tf.strings.strip(text), "")
        return {"translation": tf.where(blank, "", text_out), "score": tf.where(blank, 0.0, score)}


class TranslationTask:
    """Trains, evaluates and serves a sequence-to-sequence translator."""

    options_class = TranslationOptions

    problem = "translation"
    default_monitor = "val_loss"

    def __init__(self, options: TranslationOptions, data_config):
        self.options = options
        self.data = data_config

    # --- data -------------------------------------------------------------
    def read(self, split: str) -> TextExamples:
        return read_translation_split(self.data, split)

    def fit_labels(self, train: TextExamples) -> None:
        """Translation has no label vocabulary (the tokenizer is built in `build_backbone`)."""

    def build_backbone(self, model_config, train: TextExamples, run_dir: Path):
        """`(backbone, tokenizer)`; trains a shared SentencePiece model first when asked.

        With `model.backbone: random`, no `model.vocabulary` and a
        `model.vocabulary_size`, a SentencePiece model is trained on the
        source and target training sentences and kept at
        `<run_dir>/sentencepiece.model` (reused when a run resumes).
        """
        tokenizer = None
        if model_config.backbone == "random" and not model_config.vocabulary:
            path = Path(run_dir) / "sentencepiece.model"
            if not path.exists():
                proto = train_sentencepiece(train.texts + train.pairs, model_config.vocabulary_size,
                                            self.options.tokenizer_model)
                path.write_bytes(proto)
            tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=path.read_bytes())
        return load_seq2seq_backbone(model_config, tokenizer)

    def make_encoder(self, tokenizer, sequence_length: int) -> TranslationEncoder:
        return TranslationEncoder(tokenizer, sequence_length, self.options.prefix)

    def encode(self, examples: TextExamples, encoder: TranslationEncoder, training: bool) -> EncodedSplit:
        """Tokenizes pairs (batched, in-graph) into cached variable-length examples.

        Each element is `(features, labels, weights)`: features
        `encoder_token_ids`, `encoder_padding_mask`, `decoder_token_ids`,
        `decoder_padding_mask` (T_e,)/(T_d,) int32, labels (T_d,) int32,
        weights (T_d,) float32 ones (the pipeline pads them with 0).
        """
        pairs = tf.data.Dataset.from_tensor_slices((examples.texts, examples.pairs)).batch(TOKENIZE_BATCH)
        tokenized = pairs.map(lambda s, t: encoder.tokenize(s, t), num_parallel_calls=tf.data.AUTOTUNE).cache()
        truncated = tokens = 0
        for pieces, flags in tokenized:
            truncated += int(tf.reduce_sum(tf.cast(flags, tf.int32)))
            tokens += int(tf.reduce_sum(pieces["labels"].row_lengths()))

        def example(pieces):
            source, target = pieces["encoder_token_ids"], pieces["decoder_token_ids"]
            features = {
                "encoder_token_ids": source,
                "encoder_padding_mask": tf.ones_like(source),
                "decoder_token_ids": target,
                "decoder_padding_mask": tf.ones_like(target),
            }
            return features, pieces["labels"], tf.ones_like(pieces["labels"], tf.float32)

        dataset = tokenized.map(lambda pieces, _: pieces).unbatch().map(example)
        return EncodedSplit(dataset, len(examples), truncated, tokens / max(len(examples), 1))

    # --- model ------------------------------------------------------------
    def build_model(self, backbone) -> keras.Model:
        if isinstance(backbone, keras_hub.models.T5Backbone):
            return keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
        return TransformerTranslator(backbone, name="transformer_translator")

    def loss(self):
        return SequenceCrossentropy(self.options.label_smoothing)

    def metrics(self):
        return [TokenAccuracy()]

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    # --- evaluation ---------------------------------------------------------
    def translate(self, model, encoder: TranslationEncoder, sources: list[str], batch_size: int) -> list[str]:
        """Beam-search translations of `sources` (through the serving function)."""
        serve = self.serving_module(model, encoder).serve
        out = []
        for start in range(0, len(sources), batch_size):
            result = serve(tf.constant(sources[start:start + batch_size]))
            out.extend(s.decode("utf-8") for s in result["translation"].numpy())
        return out

    def evaluate(self, model, examples: TextExamples, split: EncodedSplit, encoder: TranslationEncoder,
                 batch_size: int, out_dir: Path, verbose: int = 0) -> dict:
        """BLEU and chrF (sacreBLEU, detokenized) of beam-search output; writes `translations.tsv`."""
        import sacrebleu

        started = time.time()
        hypotheses = self.translate(model, encoder, examples.texts, batch_size)
        seconds = time.time() - started
        bleu = sacrebleu.metrics.BLEU()
        chrf = sacrebleu.metrics.CHRF()
        bleu_score = bleu.corpus_score(hypotheses, [examples.pairs])
        chrf_score = chrf.corpus_score(hypotheses, [examples.pairs])
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        count = self.options.samples or len(hypotheses)
        with open(out_dir / "translations.tsv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(["source", "reference", "translation"])
            writer.writerows(zip(examples.texts[:count], examples.pairs[:count], hypotheses[:count]))
        return {
            "bleu": round(bleu_score.score, 2),
            "chrf": round(chrf_score.score, 2),
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(bleu_score),
            "num_examples": len(hypotheses),
            "beam_size": self.options.beam_size,
            "decode_seconds": round(seconds, 1),
            "mean_translation_words": float(np.mean([len(h.split()) for h in hypotheses])),
        }

    # --- serving ------------------------------------------------------------
    def serving_module(self, model, encoder: TranslationEncoder) -> TranslationServingModule:
        return TranslationServingModule(model, encoder, self.options)

    def sample_inputs(self) -> dict[str, list[str]]:
        """Inputs for the export check (nothing; the last one is longer than any model)."""
        return {"text": ["A man in a blue shirt is riding a bike.", "Two dogs play in the snow.", "Hi", "",
                         "word " * 600]}
