"""The Llama family for tfsft: a KerasHub `LlamaBackbone` that keeps its tied
embeddings through a save, and a byte-level BPE tokenizer that splits words as
GPT-2 / Hugging Face `ByteLevel` do in TensorFlow ops (eagerly and in a graph alike),
with chat control tokens (`<|im_start|>`, `<|im_end|>`) kept whole.

Used by `tfsft.models.gguf` (GGUF files) and `tfsft.models.backbones`
(`backbone: random`, `architecture: llama`).
"""

from __future__ import annotations

import re

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.utils.tensor_utils import preprocessing_function

from tfsft.models.sources import ModelSourceError


@keras.saving.register_keras_serializable(package="tfsft")
class LlamaBackbone(keras_hub.models.LlamaBackbone):
    """KerasHub's `LlamaBackbone`, with `tie_word_embeddings` kept in its config.

    KerasHub 0.32 leaves it out of `get_config`, so a tied model saved with
    `model.save` or `save_to_preset` comes back untied and its weights no longer
    load. Outputs the final-norm sequence (B, T, hidden); logits (B, T, vocab) are
    `backbone.token_embedding(x, reverse=True)`.
    """

    def get_config(self):
        return {**super().get_config(), "tie_word_embeddings": self.tie_word_embeddings}


# Unicode White_Space, which GPT-2's `\s` means (RE2's `\s` is ASCII only).
_WHITESPACE = r"\t\n\v\f\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_MARK = "\ufdd0"  # a Unicode noncharacter, never in real text
_GPT2_WORD = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
              rf"| ?[^{_WHITESPACE}\p{{L}}\p{{N}}{_MARK}]+|[{_WHITESPACE}]+|{_MARK}")


def gpt2_words(texts: tf.Tensor, unsplittable_tokens: list[str]) -> tf.RaggedTensor:
    r"""GPT-2's word split of (B,) strings → (B, None) words, in TensorFlow ops.

    GPT-2's regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    (Hugging Face `ByteLevel(use_regex=True)`) with the look-ahead, which RE2 lacks,
    replaced by a mark before the last whitespace character of every run that a
    non-space follows: `\s+(?!\S)` then is a plain `\s+` ending at the mark
    ("a  b" → "a", " ", " b"; "a\n\nb" → "a", "\n", "\n", "b"; a run at the end
    stays whole). `unsplittable_tokens` are cut out first and kept whole, and the
    text between them is split on its own, as Hugging Face does with added tokens.
    """
    if unsplittable_tokens:
        special = "|".join(re.escape(t) for t in sorted(unsplittable_tokens, key=len, reverse=True))
        segments = tf_text.regex_split(texts, special, special)  # (B, S)
        is_special = tf.strings.regex_full_match(segments.flat_values, special)
    else:
        segments = tf.RaggedTensor.from_row_lengths(texts, tf.ones_like(texts, tf.int64))
        is_special = tf.zeros_like(texts, tf.bool)
    flat = segments.flat_values
    marked = tf.strings.regex_replace(flat, rf"([{_WHITESPACE}])([^{_WHITESPACE}])", _MARK + r"\1\2")
    words = tf_text.regex_split(tf.where(is_special, "", marked), _GPT2_WORD, _GPT2_WORD)  # (S, W)
    words = tf.concat([tf.ragged.boolean_mask(flat[:, None], is_special[:, None]), words], axis=1)
    words = tf.ragged.boolean_mask(words, tf.not_equal(words, _MARK))
    return segments.with_flat_values(words).merge_dims(1, 2)


@keras.saving.register_keras_serializable(package="tfsft")
class LlamaBytePairTokenizer(keras_hub.tokenizers.BytePairTokenizer):
    r"""Byte-level BPE of Llama-3/SmolLM-style models, with start, end and pad tokens.

    The `unsplittable_tokens` (chat markers such as `<|im_start|>`) are matched
    whole in the text and always come out as their single ids. Both paths split
    words exactly as GPT-2's regex (Hugging Face's `ByteLevel` pre-tokenizer): the
    TensorFlow one (inside `tf.data` / `tf.function`: training and serving) with
    `gpt2_words` instead of KerasHub's approximation, which differs on whitespace
    runs ("\n\n" before a word, trailing spaces); the eager one (Hugging Face
    `tokenizers`) with `ByteLevel(use_regex=True)` instead of KerasHub's Llama-3 regex.

    Args:
        vocabulary: token → id, a dict or a vocab.json path.
        merges: the merge rules `"left right"`, a list or a merges.txt path.
        start_token, end_token, pad_token: special tokens in `vocabulary`
            (ids `start_token_id`, `end_token_id`, `pad_token_id`); the pad must
            not be the end token.
        **kwargs: `BytePairTokenizer` arguments, e.g. `unsplittable_tokens`.
    """

    backbone_cls = LlamaBackbone

    def __init__(self, vocabulary=None, merges=None, start_token="<|im_start|>", end_token="<|im_end|>",
                 pad_token="<|endoftext|>", **kwargs):
        if pad_token == end_token:
            raise ValueError(f"pad_token must differ from end_token (KerasHub's samplers stop where a padded "
                             f"position holds the end token). Received: both {end_token!r}")
        self._add_special_token(start_token, "start_token")
        self._add_special_token(end_token, "end_token")
        self._add_special_token(pad_token, "pad_token")
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        from tokenizers import pre_tokenizers

        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space,
                                                                 use_regex=True)

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        """KerasHub's TensorFlow path (BPE cache, merges, ids) over `gpt2_words`."""
        self._maybe_initialized_tf()
        if self.add_prefix_space:
            inputs = tf.strings.join([" ", inputs])
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        words = gpt2_words(inputs[None] if unbatched else inputs, self.unsplittable_tokens)  # (B, W)
        flat = words.flat_values
        cached = self.cache.lookup(flat)
        unseen = tf.equal(cached, "")

        def merge_unseen():
            self._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat, unseen))
            return self.cache.lookup(flat)

        pieces = tf.strings.split(tf.cond(tf.reduce_any(unseen), merge_unseen, lambda: cached), sep=" ")  # (N, P)
        if self.compute_dtype != tf.string:
            pieces = self.token_to_id_map.lookup(pieces)
        tokens = tf.RaggedTensor.from_row_splits(pieces.flat_values, tf.gather(pieces.row_splits, words.row_splits))
        if self.sequence_length:
            tokens = tokens.to_tensor(default_value=self.pad_token_id, shape=[tokens.shape[0], self.sequence_length])
        return tf.ensure_shape(tokens[0], [self.sequence_length]) if unbatched else tokens

    def get_config(self):
        return {**super().get_config(), "start_token": self.start_token, "end_token": self.end_token,
                "pad_token": self.pad_token}


CHAT_MARKER = re.compile(r"<\|[^|]+\|>")


def pad_token_for(tokens_by_id: list[str], end_token: str, pad_token: str | None = None) -> str:
    """`pad_token` unless it is missing or the end token; then `<|endoftext|>`, else the token of id 0.

    The pad must differ from the end token: KerasHub's samplers stop where a
    padded position holds it, and masks from `ids != pad` would drop the end
    token a chat model must learn to emit (SmolLM2's file pads with its end id 2).
    """
    for candidate in (pad_token, "<|endoftext|>", tokens_by_id[0]):
        if candidate is not None and candidate != end_token and candidate in tokens_by_id:
            return candidate
    raise ModelSourceError(f"no pad token distinct from the end token {end_token!r}")
