"""Tokenizer training: WordPiece for BERT, byte-level BPE for GPT-2, SentencePiece for seq2seq.

* WordPiece: KerasHub `compute_word_piece_vocabulary` (TF Text's
  `bert_vocab_from_dataset` learner) writes a `vocab.txt` that
  `keras_hub.models.BertTokenizer(vocabulary=...)` loads. The reserved tokens
  `[PAD] [CLS] [SEP] [UNK] [MASK]` take ids 0–4. The learner searches for a
  count threshold, so the vocabulary comes out near, not exactly at, the
  requested size (the size is logged).
* Byte-level BPE: the Hugging Face `tokenizers` library (Rust, fast) learns the
  merges over GPT-2's byte alphabet with GPT-2's pre-tokenizer regex; we write
  its vocabulary as `vocab.json` (token → id) and its merges as `merges.txt`
  (one `left right` pair a line, no header), the format
  `keras_hub.models.GPT2Tokenizer(vocabulary=..., merges=...)` loads. All 256
  bytes are in the alphabet, so any text round-trips exactly. `<|endoftext|>`
  takes the last id, as in GPT-2: KerasHub's `GPT2Tokenizer` pads with id 0,
  and its samplers stop when a padded position holds the end token, so the two
  must differ or generation would stop before it starts.
* SentencePiece: trained in memory with the `sentencepiece` package and
  wrapped in a KerasHub `SentencePieceTokenizer` (TF Text ops), so tokenization *and*
  detokenization run in-graph, in tf.data and inside the exported SavedModel.
  The run directory keeps it under `tokenizer/` (`save_to_preset`).

  Its special ids are fixed so every model trained here agrees:
  `<pad>`=0, `</s>`=1 (end), `<unk>`=2, `<s>`=3 (decoder start). Pad 0 and end 1
  are also T5's ids, so the same vocabulary serves `architecture: t5`.

  Example:
      >>> proto = train_sentencepiece(["a cat", "eine Katze"] * 50, vocabulary_size=40)
      >>> tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

WORDPIECE_RESERVED = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
END_OF_TEXT = "<|endoftext|>"
BYTE_ALPHABET = 256


def train_wordpiece(texts: Sequence[str], vocabulary_size: int, path: str | Path, lowercase: bool = True) -> int:
    """Learns a WordPiece vocabulary from `texts` and writes it to `path`.

    Args:
        texts: the training documents.
        vocabulary_size: the target size (the result is close to it).
        path: where `vocab.txt` is written (one token a line, id = line index).
        lowercase: lowercase before learning; must match the tokenizer's
            `lowercase` (`model.lowercase`).

    Returns:
        The size of the written vocabulary.

    Example:
        >>> size = train_wordpiece(["the cat sat", "the dog sat"], 40, "/tmp/vocab.txt")
        >>> keras_hub.models.BertTokenizer(vocabulary="/tmp/vocab.txt")("the cat")
    """
    import keras_hub
    import tensorflow as tf

    if vocabulary_size <= len(WORDPIECE_RESERVED):
        raise ValueError(f"vocabulary_size must exceed the {len(WORDPIECE_RESERVED)} reserved tokens. "
                         f"Received: vocabulary_size={vocabulary_size}")
    dataset = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        dataset, vocabulary_size, lowercase=lowercase, strip_accents=False, reserved_tokens=WORDPIECE_RESERVED
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    return len(vocabulary)


def train_byte_level_bpe(texts: Sequence[str], vocabulary_size: int, vocabulary_path: str | Path,
                         merges_path: str | Path) -> int:
    """Learns a GPT-2-style byte-level BPE and writes `vocab.json` + `merges.txt`.

    Args:
        texts: the training documents.
        vocabulary_size: the size including the 256 byte tokens and
            `<|endoftext|>` (the last id); the number of merges is `vocabulary_size - 257`
            (fewer when the corpus runs out of pairs).
        vocabulary_path: where the token → id JSON is written.
        merges_path: where the merges are written, highest priority first.

    Returns:
        The size of the written vocabulary.

    Example:
        >>> train_byte_level_bpe(["to be or not to be"], 300, "/tmp/vocab.json", "/tmp/merges.txt")
        >>> keras_hub.models.GPT2Tokenizer(vocabulary="/tmp/vocab.json", merges="/tmp/merges.txt")
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocabulary_size <= BYTE_ALPHABET + 1:
        raise ValueError(f"vocabulary_size must exceed the {BYTE_ALPHABET} bytes + {END_OF_TEXT}. "
                         f"Received: vocabulary_size={vocabulary_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    ordered = sorted((i, t) for t, i in model["vocab"].items() if t != END_OF_TEXT)  # ids 1.. (0 was <|endoftext|>)
    vocabulary = {token: new_id for new_id, (_, token) in enumerate(ordered)}
    vocabulary[END_OF_TEXT] = len(vocabulary)
    merges = [pair if isinstance(pair, str) else " ".join(pair) for pair in model["merges"]]
    for path in (vocabulary_path, merges_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(vocabulary_path).write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    Path(merges_path).write_text("".join(m + "\n" for m in merges), encoding="utf-8")
    return len(vocabulary)


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
    import sentencepiece as spm

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
