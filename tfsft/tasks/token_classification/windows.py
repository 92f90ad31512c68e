"""Words → WordPiece windows for token classification, in-graph.

Each word is tokenized on its own (so every subword knows its word), the
sentence's subwords are cut into windows of at most `sequence_length - 2`
subwords that overlap when the sentence is longer, and each window is packed as
`[CLS] subwords [SEP]`. Nothing is ever cut off: a sentence of T subwords with
budget W = sequence_length - 2 and stride s gets

    n = 1                      if T ≤ W
    n = ⌈(T - W) / s⌉ + 1      otherwise,  window k covering [min(k·s, T-W), +W)

so the last window ends exactly at T and every subword lies in ≥ 1 window.
When windows overlap, a subword is *owned* by the window in which it sits
farthest from an edge, score = min(j, len-1-j) for position j of a window of
len subwords (ties → the earlier window), so merging the windows' predictions
back predicts every word exactly once, from the window with the most context
on both sides.

The same layer runs in tf.data (training, evaluation) and in the SavedModel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfsft.models.backbones import special_token_ids
from tfsft.models.casing import word_casing


class WordWindowEncoder(keras.layers.Layer):
    """Ragged words → packed windows plus the subword ↔ word alignment.

    Args:
        tokenizer: a KerasHub WordPiece tokenizer (e.g. `BertTokenizer`).
        sequence_length: the longest packed window, [CLS] and [SEP] included.
        stride: subwords between the starts of consecutive windows of a long
            sentence, 1 ≤ stride ≤ sequence_length - 2 (default: half of that).
        casing: also return `token_casing` (for `task.casing`).

    Call args:
        words: string `tf.RaggedTensor` (B, [W]).

    Returns:
        A dict; NW ≥ B is the number of windows, L the longest window:
        `token_ids`, `segment_ids`, `padding_mask`: (NW, L) int32 model inputs;
        `window_row`: (NW,) int32, the sentence of each window;
        `token_word`: (NW, L) int32, index into `words.flat_values` of the
            word each subword belongs to (-1 at [CLS], [SEP] and padding);
        `token_first`: (NW, L) bool, the subword starts its word;
        `token_owner`: (NW, L) bool, this window's prediction is the one kept;
        with `casing`, `token_casing`: (NW, L) int32, the casing class of the
            subword's word (`tfsft.models.casing.word_casing`; 0 at [CLS],
            [SEP] and padding).

    Example:
        >>> encoder = WordWindowEncoder(tokenizer, sequence_length=128)
        >>> out = encoder(tf.ragged.constant([["EU", "rejects", "German", "call"]]))
    """

    def __init__(self, tokenizer, sequence_length: int, stride: int | None = None, casing: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        budget = sequence_length - 2
        if budget < 1:
            raise ValueError(f"sequence_length must be ≥ 3 ([CLS] w [SEP]). Received: sequence_length={sequence_length}")
        stride = stride or max(1, budget // 2)
        if not 1 <= stride <= budget:
            raise ValueError(f"task.stride must be in [1, model.sequence_length - 2 = {budget}] so that windows "
                             f"leave no gap. Received: stride={stride}")
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.stride = stride
        self.casing = casing
        ids = special_token_ids(tokenizer)
        self.pad_id, self.cls_id, self.sep_id = ids["pad"], ids["start"], ids["end"]
        self.unk_id = tokenizer.token_to_id(tokenizer.oov_token) if hasattr(tokenizer, "oov_token") else 0

    def call(self, words: tf.RaggedTensor) -> dict:
        num_sentences = words.nrows()
        flat = words.flat_values  # (N,)
        subwords = tf.cast(self.tokenizer(flat), tf.int64)  # (N, [S]); S = 0 for words of only control chars
        empty = tf.cast(subwords.row_lengths() == 0, tf.int64)
        unknown = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], tf.constant(self.unk_id, tf.int64)),
                                                   empty)
        subwords = tf.concat([subwords, unknown], axis=1)  # every word has ≥ 1 subword
        sub_ids = subwords.flat_values  # (M,)
        sub_word = subwords.value_rowids()  # (M,) word of each subword
        sub_first = tf.range(tf.size(sub_ids, out_type=tf.int64)) == tf.gather(subwords.row_starts(), sub_word)

        # Subwords per sentence, T (B,), and where each sentence's subwords start in sub_ids.
        total = tf.math.unsorted_segment_sum(subwords.row_lengths(), words.value_rowids(), num_sentences)
        offset = tf.cumsum(total, exclusive=True)

        budget = tf.constant(self.sequence_length - 2, tf.int64)
        stride = tf.constant(self.stride, tf.int64)
        windows = tf.where(total <= budget, tf.ones_like(total), (total - budget + stride - 1) // stride + 1)
        window_row = tf.repeat(tf.range(num_sentences), windows)  # (NW,)
        k = tf.ragged.range(windows).flat_values  # window number within its sentence
        sentence_total = tf.gather(total, window_row)
        start = tf.minimum(k * stride, tf.maximum(sentence_total - budget, 0))
        length = tf.minimum(sentence_total, budget)
        position = tf.ragged.range(start, start + length)  # (NW, [len]) subword positions in the sentence
        j = position - tf.expand_dims(start, 1)  # position within the window
        global_index = position + tf.expand_dims(tf.gather(offset, window_row), 1)  # into sub_ids

        # Ownership: the most central window wins; ties go to the earlier window.
        num_windows = tf.size(window_row, out_type=tf.int64)
        centrality = tf.minimum(j, tf.expand_dims(length, 1) - 1 - j)
        window_index = tf.expand_dims(tf.range(num_windows), 1)
        key = (centrality * (num_windows + 1) + (num_windows - window_index)).flat_values
        best = tf.math.unsorted_segment_max(key, global_index.flat_values, tf.size(sub_ids, out_type=tf.int64))
        owner = global_index.with_flat_values(key == tf.gather(best, global_index.flat_values))

        def pack(values, first, last, pad):  # (NW, [len]) → (NW, L): first, values, last, then pad
            column = lambda v: tf.RaggedTensor.from_tensor(tf.fill([num_windows, 1], tf.cast(v, values.dtype)))
            return tf.concat([column(first), values, column(last)], axis=1).to_tensor(
                default_value=tf.cast(pad, values.dtype))

        token_ids = pack(tf.gather(sub_ids, global_index), self.cls_id, self.sep_id, self.pad_id)
        padding_mask = tf.sequence_mask(length + 2, tf.shape(token_ids, out_type=tf.int64)[1], dtype=tf.int32)
        encoded = {
            "token_ids": tf.cast(token_ids, tf.int32),
            "segment_ids": tf.zeros_like(padding_mask),
            "padding_mask": padding_mask,
            "window_row": tf.cast(window_row, tf.int32),
            "token_word": tf.cast(pack(tf.gather(sub_word, global_index), -1, -1, -1), tf.int32),
            "token_first": pack(tf.gather(sub_first, global_index), False, False, False),
            "token_owner": pack(owner, False, False, False),
        }
        if self.casing:
            encoded["token_casing"] = pack(tf.gather(tf.gather(word_casing(flat), sub_word), global_index), 0, 0, 0)
        return encoded
