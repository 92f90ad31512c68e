"""Tokenizer training: WordPiece (KerasHub) and byte-level BPE (HF tokenizers) load in KerasHub and round-trip."""

import json
import re

import keras_hub
import numpy as np
import pytest

from tfsft.models.tokenizer_training import (
    END_OF_TEXT,
    WORDPIECE_RESERVED,
    train_byte_level_bpe,
    train_wordpiece,
)

WORDS = ["the", "a", "film", "movie", "story", "actor", "plot", "scene", "funny", "dull", "charming", "long", "short", "great", "bad", "music", "director", "camera", "light", "dark", "night", "day", "city", "river", "dog", "cat", "runs", "walks", "plays", "sings"]


def corpus(n=400, seed=0):
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=rng.integers(3, 12)))
        words[0] = words[0].capitalize()
        texts.append(" ".join(words) + rng.choice([".", "!", ", really.", "?"]))
    return texts


def normalise(text: str) -> str:
    """What BERT's basic tokenizer keeps: lowercase, punctuation split off, single spaces."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def test_wordpiece_vocabulary_loads_and_round_trips(tmp_path):
    texts = corpus()
    path = tmp_path / "vocab.txt"
    size = train_wordpiece(texts, 120, path, lowercase=True)
    vocabulary = path.read_text(encoding="utf-8").splitlines()
    assert len(vocabulary) == size
    assert vocabulary[: len(WORDPIECE_RESERVED)] == WORDPIECE_RESERVED
    assert size <= 120
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(path), lowercase=True)
    samples = texts[:20] + ["The dog plays music at night, really."]
    for text in samples:
        ids = tokenizer(text)
        assert tokenizer.token_to_id("[UNK]") not in list(np.asarray(ids))
        assert tokenizer.detokenize(ids) == normalise(text)


def test_wordpiece_rejects_a_size_below_the_reserved_tokens(tmp_path):
    with pytest.raises(ValueError, match="reserved tokens"):
        train_wordpiece(["a b"], 5, tmp_path / "v.txt")


def test_byte_level_bpe_loads_in_keras_hub_and_round_trips_exactly(tmp_path):
    texts = corpus()
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    size = train_byte_level_bpe(texts, 400, vocab, merges)  # the tiny corpus runs out of pairs before 400
    table = json.loads(vocab.read_text(encoding="utf-8"))
    merge_lines = merges.read_text(encoding="utf-8").splitlines()
    assert size == len(table) and 300 < size <= 400
    assert table[END_OF_TEXT] == size - 1 and sorted(table.values()) == list(range(size))
    assert len(merge_lines) == size - 257  # 256 bytes + <|endoftext|>
    assert all(len(line.split(" ")) == 2 for line in merge_lines)  # no "#version" header
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=str(vocab), merges=str(merges))
    assert tokenizer.end_token_id == size - 1
    assert tokenizer.pad_token_id != tokenizer.end_token_id  # else KerasHub's samplers stop at once
    unseen = ["  Ünïcode — ☃ and\ttabs\nnew lines  ", "The dog walks.\n\nThe cat sings!", "x" * 50]
    for text in texts[:20] + unseen:
        ids = tokenizer(text)
        assert tokenizer.detokenize(ids) == text
    assert len(tokenizer("The dog walks")) < len("The dog walks")  # merges were learned and applied


def test_byte_level_bpe_rejects_a_size_below_the_byte_alphabet(tmp_path):
    with pytest.raises(ValueError, match="256 bytes"):
        train_byte_level_bpe(["a b"], 257, tmp_path / "v.json", tmp_path / "m.txt")
