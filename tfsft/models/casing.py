"""Word casing as an input feature, for backbones that lowercase their input.

An uncased WordPiece tokenizer (the offline MiniLM's) maps "Apple" and
"apple", "US" and "us" to the same ids, so a tagger built on it cannot see the
capital letters that mark most named entities. `word_casing` puts each word in
one of `NUM_CASINGS` classes from its raw text, and `with_casing_embedding`
adds a learned vector per class to the backbone's input embeddings:

    x = LayerNorm(E_token[t] + E_position[p] + E_segment[s] + E_casing[c])

`E_casing` starts at zero, so the model starts out exactly as the pretrained
backbone and learns how much casing matters; every layer then sees it in
context ("New York" vs a capitalized first word).
"""

from __future__ import annotations

import keras
import tensorflow as tf

CASINGS = ["none", "lower", "title", "upper", "mixed", "numeric", "other"]
NUM_CASINGS = len(CASINGS)  # class 0 ("none") marks [CLS], [SEP] and padding

_BERT_EMBEDDING_LAYERS = ("token_embedding", "position_embedding", "segment_embedding", "embeddings_add",
                          "embeddings_layer_norm", "embeddings_dropout", "transformer_layers")


def word_casing(words: tf.Tensor) -> tf.Tensor:
    """Casing class id (int32, same shape) of each word string.

    lower "rejects" · title "German", "Zürich", "A" · upper "EU", "U.S." ·
    mixed "iPhone", "McDonald" · numeric "1996", "3-2" (no letters, a digit) ·
    other ".", "--" (no letters, no digit). Letters are Unicode (\\pL).
    """
    has_letter = tf.strings.regex_full_match(words, r".*\pL.*")
    has_upper = tf.strings.regex_full_match(words, r".*\p{Lu}.*")
    has_lower = tf.strings.regex_full_match(words, r".*\p{Ll}.*")
    two_letters = tf.strings.regex_full_match(words, r".*\pL.*\pL.*")
    title = tf.strings.regex_full_match(words, r"[^\pL]*\p{Lu}[^\p{Lu}]*")
    has_digit = tf.strings.regex_full_match(words, r".*\pN.*")
    index = CASINGS.index
    casing = tf.where(has_digit, index("numeric"), index("other"))
    casing = tf.where(has_letter, index("mixed"), casing)
    casing = tf.where(has_letter & ~has_upper, index("lower"), casing)
    casing = tf.where(title, index("title"), casing)
    casing = tf.where(has_upper & ~has_lower & two_letters, index("upper"), casing)
    return tf.cast(casing, tf.int32)


def supports_casing(backbone) -> bool:
    """Whether `backbone` has BERT's embedding layers (KerasHub `BertBackbone` and its kin)."""
    return all(hasattr(backbone, name) for name in _BERT_EMBEDDING_LAYERS)


def with_casing_embedding(backbone, inputs: dict) -> keras.KerasTensor:
    """The backbone's sequence output (B, L, D), with `inputs["token_casing"]`
    (B, L) embedded and added to its input embeddings.

    Reuses the backbone's own (pretrained) layers, so their weights are shared
    with `backbone`; only the (NUM_CASINGS, D) casing table is new.
    """
    tokens = backbone.token_embedding(inputs["token_ids"])
    positions = backbone.position_embedding(tokens)
    segments = backbone.segment_embedding(inputs["segment_ids"])
    casing = keras.layers.Embedding(NUM_CASINGS, backbone.hidden_dim, embeddings_initializer="zeros",
                                    name="casing_embedding")(inputs["token_casing"])
    x = backbone.embeddings_add((tokens, positions, segments))
    x = keras.layers.Add(name="add_casing")([x, casing])
    x = backbone.embeddings_dropout(backbone.embeddings_layer_norm(x))
    for layer in backbone.transformer_layers:
        x = layer(x, padding_mask=inputs["padding_mask"])
    return x
