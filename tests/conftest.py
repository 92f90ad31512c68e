"""Shared fixtures: a tiny WordPiece vocabulary, the real-data folder, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TFSFT_DATA_DIR", REPO.parent / "shared" / "data"))

WORDS = (
    "the a an and of to is it in that this film movie story good great bad dull boring fun funny "
    "best worst love hate not no very too long short acted beautifully gripping ok , . ! ? ' -"
).split()


def write_vocab(path: Path) -> Path:
    """A small uncased WordPiece vocabulary: specials, words, letters, ##letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + letters + ["##" + c for c in letters]
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def float32_policy():
    """Keras' global dtype policy is float32 for the test, whatever an earlier test set."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "sst2" / "train.tsv").exists():
        pytest.skip(f"real data not found at {DATA_DIR} (set TFSFT_DATA_DIR to ../shared/data)")
    return DATA_DIR


def tiny_model(vocab: Path, architecture: str = "bert") -> dict:
    """The `model:` section of a tiny random-weight config."""
    return {
        "backbone": "random",
        "architecture": architecture,
        "vocabulary": str(vocab),
        "num_layers": 1,
        "num_heads": 2,
        "hidden_dim": 16,
        "intermediate_dim": 32,
        "sequence_length": 32,
    }


def tiny_train(**overrides) -> dict:
    """The `train:` section: a few fast steps in float32."""
    return {"batch_size": 8, "max_steps": 6, "eval_every_steps": 3, "learning_rate": 1e-3,
            "precision": "float32", "verbose": 0, **overrides}


def tiny_text_config(folder: Path, vocab: Path, splits=("train", "validation"), **train_overrides):
    """A text classification config on 16 JSON-lines rows (every split the same file) with a tiny model."""
    import json

    from tfsft.experiment import config_from_mapping

    rows = [{"text": t, "label": l} for t, l in [("good film", "pos"), ("bad dull film", "neg")] * 8]
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return config_from_mapping({
        "name": "tiny", "run_dir": str(folder / "run"), "model": tiny_model(vocab),
        "task": {"name": "text_classification", "pooling": "mean"},  # mean pooling: a tfsft layer in the model
        "data": {"files": {split: str(data) for split in splits}},
        "train": tiny_train(**train_overrides),
    })
