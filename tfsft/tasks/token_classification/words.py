"""Sentences → words with character offsets, in-graph: the word splitters of token classification serving.

The SavedModel's `serving_default` splits raw text with the splitter that
matches how the training data was tokenized (`task.word_splitter`):

- `default`: punctuation apart, but abbreviations and numbers with inner dots
  (U.S., 3.5), words with inner hyphens, ampersands or a long apostrophe part
  (1996-08-22, AT&T, O'Neill) whole, and a short clitic apart ("Zürich's" →
  Zürich 's; "didn't" → didn 't): the CoNLL-2003 NER convention.
- `penn_treebank`: as the Penn Treebank and Universal Dependencies English
  split (POS and chunk tagging data): the clitics n't 's 'm 'd 'll 're 've
  apart ("didn't" → did n't, "can't" → ca n't, "John's" → John 's), numbers
  with thousands separators whole (1,000), "..." and "--" one word each.
- `whitespace`: words are what whitespace separates (text tokenized beforehand).

All are TF Text regex/whitespace ops, which TF Serving has.
"""

from __future__ import annotations

import tensorflow as tf

_WORD = r"[\pL\pN_]"
WORD_PATTERN = (rf"{_WORD}+(?:\.{_WORD}+)+\.?|{_WORD}+(?:[-&]{_WORD}+|['’]{_WORD}{{2,}})*"
                rf"|['’]{_WORD}+|[^\pL\pN_\s]")
# Penn Treebank: words keep their inner apostrophes here; CLITIC then cuts the clitic off their end.
PTB_WORD_PATTERN = (rf"\pN+(?:,\pN{{3}})+(?:\.\pN+)?|{_WORD}+(?:\.{_WORD}+)+\.?|{_WORD}+(?:[-&'’]{_WORD}+)*"
                    rf"|['’]{_WORD}+|\.\.\.|--|[^\pL\pN_\s]")
CLITIC = r"(?i)n['’]t$|['’](?:s|m|d|ll|re|ve)$"


def _regex_words(text: tf.Tensor, pattern: str):
    """The matches of `pattern` in each text, and their byte offsets, ragged (B, [W])."""
    import tensorflow_text as tf_text

    return tf_text.regex_split_with_offsets(text, rf"\s+|{pattern}", pattern)


def _with_characters(text: tf.Tensor, words, byte_starts, byte_ends):
    """`(words, starts, ends, byte_starts, byte_ends)`, adding character (code point) offsets."""
    sentence = tf.gather(text, words.value_rowids())  # (N,) the sentence of each word

    def characters(byte_offsets):  # code points before a byte offset
        prefix = tf.strings.substr(sentence, tf.zeros_like(byte_offsets.flat_values), byte_offsets.flat_values)
        return byte_offsets.with_flat_values(tf.strings.length(prefix, unit="UTF8_CHAR"))

    return words, characters(byte_starts), characters(byte_ends), byte_starts, byte_ends


def split_words(text: tf.Tensor):
    """The `default` splitter (see the module doc).

    Args:
        text: string tensor (B,).

    Returns:
        `(words, starts, ends, byte_starts, byte_ends)`, all ragged (B, [W]):
        the words; int64 *character* (Unicode code point) offsets, so that in
        Python `text[b][starts[b][i]:ends[b][i]] == words[b][i]`; and the
        matching byte offsets, for `tf.strings.substr`.
    """
    return _with_characters(text, *_regex_words(text, WORD_PATTERN))


def split_penn_treebank(text: tf.Tensor):
    """The `penn_treebank` splitter; returns what `split_words` returns."""
    import tensorflow_text as tf_text

    words, starts, ends = _regex_words(text, PTB_WORD_PATTERN)
    parts, part_starts, part_ends = tf_text.regex_split_with_offsets(words.flat_values, CLITIC, CLITIC)  # (N, [P])
    word_start = tf.expand_dims(starts.flat_values, 1)

    def per_sentence(values):  # (N, [P]) → (B, [W']): the parts of each sentence's words, in order
        return words.with_flat_values(values).merge_dims(1, 2)

    return _with_characters(text, per_sentence(parts), per_sentence(part_starts + word_start),
                            per_sentence(part_ends + word_start))


def split_whitespace(text: tf.Tensor):
    """The `whitespace` splitter; returns what `split_words` returns."""
    import tensorflow_text as tf_text

    return _with_characters(text, *tf_text.WhitespaceTokenizer().tokenize_with_offsets(text))


WORD_SPLITTERS = {"default": split_words, "penn_treebank": split_penn_treebank, "whitespace": split_whitespace}
