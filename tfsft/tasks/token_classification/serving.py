"""The token classification SavedModel: sentences (or pre-split tokens) in, tags (and entity spans) out.

Signatures (ragged outputs are not allowed, so lists are padded and counted;
per sentence, entries past `word_count` / `entity_count` are padding):

`serving_default(text: string (B,))` →
    word_count (B,) int32; word_texts, word_tags (B, W) string;
    word_scores (B, W) float32 (probability of the chosen tag; tags are the
    most probable valid IOB2 sequence unless `task.decoding: argmax`);
    word_starts, word_ends (B, W) int32 character offsets (end exclusive);
    entity_count (B,) int32; entity_texts, entity_types (B, E) string;
    entity_starts, entity_ends (B, E) int32 character offsets, so that in
    Python `text[start:end] == entity_text`.

`serve_tokens(tokens: string (B, W), lengths: int32 (B,))` → the same minus
`word_texts`/`word_starts`/`word_ends`, with `entity_starts`/`entity_ends` as
word indices (end exclusive) and `entity_texts` the words joined by spaces.

Plain tag sets (part of speech, ...) return the `word_*` outputs only, one tag
per word (the most probable).
"""

from __future__ import annotations

import tensorflow as tf

from tfsft.tasks.token_classification.decoding import iob2_chunks, iob2_viterbi, label_tables
from tfsft.tasks.token_classification.words import split_words


def tag_probabilities(model, encoder, words: tf.RaggedTensor, input_names: list[str]) -> tf.Tensor:
    """Per-word tag probabilities (N, C), N = number of words, merged from the windows.

    Each word is read at its first subword in the window that owns it (see
    `WordWindowEncoder`), so every word gets exactly one prediction.
    """
    encoded = encoder(words)
    logits = model({k: encoded[k] for k in input_names}, training=False)  # (NW, L, C)
    keep = encoded["token_first"] & encoded["token_owner"]  # one position per word
    word = tf.boolean_mask(encoded["token_word"], keep)  # (N,)
    probabilities = tf.nn.softmax(tf.cast(tf.boolean_mask(logits, keep), tf.float32))  # (N, C)
    shape = tf.stack([tf.size(words.flat_values), tf.shape(probabilities)[1]])
    return tf.scatter_nd(tf.expand_dims(word, 1), probabilities, shape)


def decode_tags(probabilities: tf.Tensor, words: tf.RaggedTensor, label_types: tf.Tensor, label_begins: tf.Tensor,
                viterbi: bool = True) -> tf.Tensor:
    """Label ids (N,) from per-word probabilities (N, C): the best valid IOB2
    sequence of each sentence (`iob2_viterbi`), or the per-word argmax."""
    if not viterbi:
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    log_probs = words.with_flat_values(tf.math.log(probabilities + 1e-9))  # (B, [W], C)
    return iob2_viterbi(log_probs, label_types, label_begins).flat_values


class TokenClassificationServingModule(tf.Module):
    """Strings → words, tags and entity spans, for `tf.saved_model.save`.

    Args:
        model: the trained token classifier ((NW, L) inputs → (NW, L, C) logits).
        encoder: the `WordWindowEncoder` used in training.
        labels: the label list, in class-id order (IOB2 tags, or plain tags).
        viterbi: decode the best valid IOB2 sequence (else the per-word argmax).
        entities: the labels are IOB2 and the entity spans are returned too.
        split: sentences → words with offsets (`tfsft.tasks.token_classification.words`).
    """

    def __init__(self, model, encoder, labels: list[str], viterbi: bool = True, entities: bool = True,
                 split=split_words):
        super().__init__(name="tfsft_ner_serving")
        self.model = model
        self.encoder = encoder
        self._input_names = list(model.input)  # the backbone's input names (token_ids, padding_mask, ...)
        types, label_types, label_begins = label_tables(labels)
        self._labels = tf.constant(labels)
        self._types = tf.constant(types)
        self._label_types = tf.constant(label_types, tf.int32)
        self._label_begins = tf.constant(label_begins, tf.bool)
        self._viterbi = viterbi and entities
        self._entities = entities
        self._split = split
        self.serve = tf.function(self._serve_text, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        self.serve_tokens = tf.function(self._serve_tokens, input_signature=[
            tf.TensorSpec([None, None], tf.string, name="tokens"), tf.TensorSpec([None], tf.int32, name="lengths")])

    def extra_signatures(self) -> dict:
        return {"serve_tokens": self.serve_tokens}

    def _tag(self, words: tf.RaggedTensor):
        """Word-level outputs, and (for entity tags) the chunk list: flat word indices, end exclusive."""
        probabilities = tag_probabilities(self.model, self.encoder, words, self._input_names)
        tag_ids = decode_tags(probabilities, words, self._label_types, self._label_begins, self._viterbi)  # (N,)
        outputs = {
            "word_count": tf.cast(words.row_lengths(), tf.int32),
            "word_tags": words.with_flat_values(tf.gather(self._labels, tag_ids)).to_tensor(""),
            "word_scores": words.with_flat_values(tf.gather(probabilities, tag_ids, batch_dims=1)).to_tensor(0.0),
        }
        return outputs, (self._chunks(words, tag_ids) if self._entities else None)

    def _chunks(self, words: tf.RaggedTensor, tag_ids: tf.Tensor) -> dict:
        is_start, end, kind = iob2_chunks(words.with_flat_values(tag_ids), self._label_types, self._label_begins)
        chunk_start = tf.where(is_start)[:, 0]  # (E_total,)
        return {
            "row": tf.gather(words.value_rowids(), chunk_start),
            "start": chunk_start,
            "end": tf.boolean_mask(end, is_start),
            "type": tf.gather(self._types, tf.boolean_mask(kind, is_start) - 1),
        }

    @staticmethod
    def _per_sentence(values, chunk, nrows, default):
        return tf.RaggedTensor.from_value_rowids(values, chunk["row"], nrows=nrows).to_tensor(default)

    def _entity_outputs(self, chunk, nrows, texts, starts, ends) -> dict:
        return {
            "entity_count": tf.math.bincount(tf.cast(chunk["row"], tf.int32), minlength=tf.cast(nrows, tf.int32),
                                             maxlength=tf.cast(nrows, tf.int32), dtype=tf.int32),
            "entity_texts": self._per_sentence(texts, chunk, nrows, ""),
            "entity_types": self._per_sentence(chunk["type"], chunk, nrows, ""),
            "entity_starts": self._per_sentence(tf.cast(starts, tf.int32), chunk, nrows, 0),
            "entity_ends": self._per_sentence(tf.cast(ends, tf.int32), chunk, nrows, 0),
        }

    def _serve_text(self, text):
        words, char_starts, char_ends, byte_starts, byte_ends = self._split(text)
        outputs, chunk = self._tag(words)
        outputs.update(
            word_texts=words.to_tensor(""),
            word_starts=tf.cast(char_starts.to_tensor(0), tf.int32),
            word_ends=tf.cast(char_ends.to_tensor(0), tf.int32),
        )
        if chunk is not None:
            first, last = chunk["start"], chunk["end"] - 1
            byte_start = tf.gather(byte_starts.flat_values, first)
            entity_text = tf.strings.substr(tf.gather(text, chunk["row"]), byte_start,
                                            tf.gather(byte_ends.flat_values, last) - byte_start)
            outputs.update(self._entity_outputs(chunk, words.nrows(), entity_text,
                                                tf.gather(char_starts.flat_values, first),
                                                tf.gather(char_ends.flat_values, last)))
        return outputs

    def _serve_tokens(self, tokens, lengths):
        words = tf.RaggedTensor.from_tensor(tokens, lengths=lengths)
        outputs, chunk = self._tag(words)
        if chunk is not None:
            row_start = tf.gather(words.row_starts(), chunk["row"])
            spans = tf.ragged.range(chunk["start"], chunk["end"])  # (E_total, [words])
            entity_text = tf.strings.reduce_join(tf.gather(words.flat_values, spans), axis=1, separator=" ")
            outputs.update(self._entity_outputs(chunk, words.nrows(), entity_text,
                                                chunk["start"] - row_start, chunk["end"] - row_start))
        return outputs
