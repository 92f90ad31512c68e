"""Train a shared source–target SentencePiece vocabulary on the training data.

The model is trained in memory with the `sentencepiece` package and wrapped in
a KerasHub `SentencePieceTokenizer` (TF Text ops), so tokenization *and*
detokenization run in-graph, in tf.data and inside the exported SavedModel.
The run directory keeps it under `tokenizer/` (`save_to_preset`).

Special ids are fixed so every model trained here agrees:
`<pad>`=0, `</s>`=1 (end), `<unk>`=2, `<s>`=3 (decoder start). Pad 0 and end 1
are also T5's ids, so the same vocabulary serves `architecture: t5`.

Example:
    >>> proto = train_sentencepiece(["a cat", "eine Katze"] * 50, vocabulary_size=40)
    >>> tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Literal

import sentencepiece as spm

PAD, END, UNK, START = "<pad>", "</s>", "<unk>", "<s>"


def train_sentencepiece(
    texts: Iterable[str],
    vocabulary_size: int,
    model_type: Literal["unigram", "bpe"] = "unigram",
    character_coverage: float = 1.0,
) -> bytes:
    """Trains a SentencePiece model and returns its serialized proto.

    Args:
        texts: training sentences (source and target together for a shared
            vocabulary).
        vocabulary_size: pieces in the vocabulary, special tokens included.
        model_type: "unigram" (Kudo, 2018) or "bpe" (Sennrich et al., 2016).
        character_coverage: share of characters covered by the alphabet
            (1.0 keeps every character, right for European languages).

    Returns:
        The model proto (bytes), for `SentencePieceTokenizer(proto=...)`.

    Raises:
        ValueError: when the text cannot support `vocabulary_size` pieces
            (SentencePiece's message names the largest possible size).
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0, pad_piece=PAD,
            eos_id=1, eos_piece=END,
            unk_id=2, unk_piece=UNK,
            bos_id=3, bos_piece=START,
            input_sentence_size=0,  # use every sentence (no sampling): reproducible
            shuffle_input_sentence=False,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:  # SentencePiece reports a too-large size this way
        raise ValueError(f"cannot train a SentencePiece vocabulary of {vocabulary_size} pieces: "
                         f"{str(e).splitlines()[-1]}") from None
    return model.getvalue()
