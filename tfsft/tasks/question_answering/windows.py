"""Question + context → overlapping WordPiece windows with character offsets, in-graph.

Tokenization keeps where each subword came from: the text is split into words
with byte offsets (`tf_text.regex_split_with_offsets`, KerasHub's WordPiece
split patterns, so the words are the ones `BertTokenizer` sees), each word is
normalized as the tokenizer does (accent stripping, case folding) and split
into subwords by TF Text's `FastWordpieceTokenizer.tokenize_with_offsets`. A
subword's byte span is its span inside the word when normalization kept the
word's byte length (all ASCII text), else the whole word's span.

Windows: the question keeps its first `max_question_length` subwords (Q); the
context's T subwords are cut into windows of at most W = L - Q - 3 subwords
(L = `sequence_length`), consecutive windows starting s = min(doc_stride, W)
apart, the last one ending at T (as in NER's `windows.py`):

    n = 1                      if T ≤ W
    n = ⌈(T - W) / s⌉ + 1      otherwise,  window k covering [min(k·s, T-W), +W)

Each window is packed `[CLS] question [SEP] context window [SEP]` (segment 0
up to the first [SEP], 1 after). A context subword is *owned* by the window in
which it sits farthest from an edge, min(j, len-1-j) (ties → the earlier
window); answers may start only at owned subwords, so each span is proposed
by one window (BERT's "max context" rule).

The same layer runs in tf.data (training, evaluation) and in the SavedModel.
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.tokenizers import word_piece_tokenizer as wordpiece

from tfsft.models.backbones import special_token_ids

NO_OFFSET = -1  # token_start / token_end of [CLS], question, [SEP] and padding


class QuestionContextEncoder(keras.layers.Layer):
    """Questions and contexts → packed windows, subword byte offsets and answer targets.

    Args:
        tokenizer: a KerasHub WordPiece tokenizer (e.g. `BertTokenizer`); its
            vocabulary, lowercasing, accent stripping and CJK splitting are used.
        sequence_length: L, the longest packed window.
        doc_stride: subwords between the starts of consecutive windows of one
            context (capped at the window's context budget W).
        max_question_length: question subwords kept (the rest is cut off).

    Call args:
        question, context: string tensors (B,).
        answer_bytes: optional int64 (B, 2), the gold answer's byte span
            [start, end) in the context, (-1, -1) for none.

    Returns:
        A dict; NW ≥ B is the number of windows, L' ≤ L the longest window:
        `token_ids`, `segment_ids`, `padding_mask`: (NW, L') int32 model inputs;
        `answer_mask`: (NW, L') int32, 1 where a span may start or end
            ([CLS], the null answer, and the context subwords);
        `window_row`: (NW,) int32, the question of each window;
        `token_start`, `token_end`: (NW, L') int64 byte span of each context
            subword in its context, -1 elsewhere;
        `token_owner`: (NW, L') bool, the window owns the context subword;
        `question_truncated`: (B,) bool;
        with `answer_bytes`: `answer_positions` (NW, 2) int32, the packed
            positions of the answer's first and last subword, (0, 0) = [CLS]
            where the window does not hold the whole answer; and
            `answer_found` (B,) bool, the answer covers at least one subword.
    """

    def __init__(self, tokenizer, sequence_length: int, doc_stride: int = 128, max_question_length: int = 64,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) or not tokenizer.split:
            raise ValueError("question_answering needs a WordPiece tokenizer that splits text (a BERT-family "
                             f"backbone) to map answers to characters. Received: {type(tokenizer).__name__}")
        if sequence_length - 3 - max_question_length < 1:
            raise ValueError(f"model.sequence_length ({sequence_length}) leaves no room for the context after "
                             f"task.max_question_length ({max_question_length}) + 3 special tokens")
        if doc_stride < 1:
            raise ValueError(f"task.doc_stride must be ≥ 1. Received: {doc_stride}")
        self.sequence_length = sequence_length
        self.doc_stride = doc_stride
        self.max_question_length = max_question_length
        ids = special_token_ids(tokenizer)
        self.pad_id, self.cls_id, self.sep_id = ids["pad"], ids["start"], ids["end"]
        self.lowercase, self.strip_accents = tokenizer.lowercase, tokenizer.strip_accents
        if tokenizer.split_on_cjk:  # split on (and keep) punctuation and CJK characters, as KerasHub does
            self._split = wordpiece.WHITESPACE_PUNCTUATION_AND_CJK_REGEX
            self._keep = wordpiece.PUNCTUATION_AND_CJK_REGEX
        else:
            self._split, self._keep = wordpiece.WHITESPACE_AND_PUNCTUATION_REGEX, wordpiece.PUNCTUATION_REGEX
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokenizer.get_vocabulary(), suffix_indicator=tokenizer.suffix_indicator,
            unknown_token=tokenizer.oov_token, no_pretokenization=True, support_detokenization=False,
            token_out_type=tf.int64)

    def tokenize(self, text: tf.Tensor):
        """Strings (B,) → subword ids, byte starts and byte ends, each int64 ragged (B, [T])."""
        words, word_starts, word_ends = tf_text.regex_split_with_offsets(text, self._split, self._keep)
        raw = words.flat_values  # (N,)
        normal = raw
        if self.strip_accents:
            normal = tf.strings.regex_replace(tf_text.normalize_utf8(normal, "NFD"), r"\p{Mn}", "")
        if self.lowercase:
            normal = tf_text.case_fold_utf8(normal)
        ids, sub_starts, sub_ends = self._wordpiece.tokenize_with_offsets(normal)  # (N, [S])
        word = ids.value_rowids()
        start, end = tf.gather(word_starts.flat_values, word), tf.gather(word_ends.flat_values, word)
        exact = tf.gather(tf.strings.length(normal) == tf.strings.length(raw), word)  # byte lengths kept
        row_splits = tf.gather(ids.row_splits, words.row_splits)  # subwords per text
        rows = lambda values: tf.RaggedTensor.from_row_splits(values, row_splits)
        return (rows(ids.flat_values), rows(tf.where(exact, start + sub_starts.flat_values, start)),
                rows(tf.where(exact, start + sub_ends.flat_values, end)))

    def call(self, question, context, answer_bytes=None) -> dict:
        question_ids = self.tokenize(question)[0]
        context_ids, context_starts, context_ends = self.tokenize(context)
        num_questions = context_ids.nrows()
        kept_question = question_ids[:, :self.max_question_length]
        q_len = kept_question.row_lengths()  # (B,) Q
        total = context_ids.row_lengths()  # (B,) T
        budget = self.sequence_length - 3 - q_len  # (B,) W
        stride = tf.minimum(tf.constant(self.doc_stride, tf.int64), budget)
        windows = tf.where(total <= budget, tf.ones_like(total), (total - budget + stride - 1) // stride + 1)
        row = tf.repeat(tf.range(num_questions), windows)  # (NW,)
        k = tf.ragged.range(windows).flat_values
        row_total, row_budget = tf.gather(total, row), tf.gather(budget, row)
        start = tf.minimum(k * tf.gather(stride, row), tf.maximum(row_total - row_budget, 0))  # (NW,)
        length = tf.minimum(row_total, row_budget)
        position = tf.ragged.range(start, start + length)  # (NW, [len]) context subword index
        flat_index = position + tf.expand_dims(tf.gather(context_ids.row_starts(), row), 1)
        in_window = lambda values: tf.gather(values.flat_values, flat_index)

        # Ownership: the most central window wins; ties go to the earlier window.
        num_windows = tf.size(row, out_type=tf.int64)
        j = position - tf.expand_dims(start, 1)
        centrality = tf.minimum(j, tf.expand_dims(length, 1) - 1 - j)
        key = centrality * (num_windows + 1) + (num_windows - tf.expand_dims(tf.range(num_windows), 1))
        best = tf.math.unsorted_segment_max(key.flat_values, flat_index.flat_values,
                                            tf.size(context_ids.flat_values, out_type=tf.int64))
        owner = flat_index.with_flat_values(tf.cast(key.flat_values == tf.gather(best, flat_index.flat_values),
                                                    tf.int64))

        question_part = tf.gather(kept_question, row)  # (NW, [Q])

        def pack(question_values, context_values, cls, sep, last_sep, pad):  # → (NW, L') int64
            column = lambda v: tf.fill([num_windows, 1], tf.constant(v, tf.int64))
            parts = [column(cls), question_values, column(sep), context_values, column(last_sep)]
            parts = [p if isinstance(p, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(p) for p in parts]
            return tf.concat(parts, axis=1).to_tensor(default_value=pad)

        ones, zeros = tf.ones_like(position), tf.zeros_like(question_part)
        no_offset = zeros + NO_OFFSET
        encoded = {
            "token_ids": pack(question_part, in_window(context_ids), self.cls_id, self.sep_id, self.sep_id,
                              self.pad_id),
            "segment_ids": pack(zeros, ones, 0, 0, 1, 0),
            "padding_mask": pack(zeros + 1, ones, 1, 1, 1, 0),
            "answer_mask": pack(zeros, ones, 1, 0, 0, 0),
            "token_start": pack(no_offset, in_window(context_starts), NO_OFFSET, NO_OFFSET, NO_OFFSET, NO_OFFSET),
            "token_end": pack(no_offset, in_window(context_ends), NO_OFFSET, NO_OFFSET, NO_OFFSET, NO_OFFSET),
            "token_owner": pack(zeros, owner, 0, 0, 0, 0) > 0,
        }
        for name in ("token_ids", "segment_ids", "padding_mask", "answer_mask"):
            encoded[name] = tf.cast(encoded[name], tf.int32)
        encoded["window_row"] = tf.cast(row, tf.int32)
        encoded["question_truncated"] = question_ids.row_lengths() > self.max_question_length
        if answer_bytes is not None:
            encoded.update(self._answer_positions(context_starts, context_ends, answer_bytes, row, start, length,
                                                  tf.gather(q_len, row)))
        return encoded

    @staticmethod
    def _answer_positions(starts, ends, answer_bytes, row, window_start, window_length, q_len) -> dict:
        """The answer's first subword: the first whose end is past the answer start; its last:
        the last that starts before the answer end. Packed at offset Q + 2 in each window."""
        answer_start, answer_end = answer_bytes[:, 0], answer_bytes[:, 1]
        first = tf.reduce_sum(tf.cast(ends <= tf.expand_dims(answer_start, 1), tf.int64), axis=1)  # (B,)
        last = tf.reduce_sum(tf.cast(starts < tf.expand_dims(answer_end, 1), tf.int64), axis=1) - 1
        found = (answer_start >= 0) & (first <= last)
        first, last = tf.gather(first, row), tf.gather(last, row)
        inside = tf.gather(found, row) & (first >= window_start) & (last < window_start + window_length)
        offset = q_len + 2 - window_start
        positions = tf.stack([tf.where(inside, first + offset, 0), tf.where(inside, last + offset, 0)], axis=1)
        return {"answer_positions": tf.cast(positions, tf.int32), "answer_found": found}
