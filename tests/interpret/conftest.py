"""Tiny trained runs to explain and stress: a text classifier and a casing NER tagger (float32, a few steps)."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model, tiny_text_config, tiny_train

NER_SENTENCES = [
    [("Peter", "B-PER"), ("loves", "O"), ("Paris", "B-LOC"), (".", "O")],
    [("the", "O"), ("film", "O"), ("is", "O"), ("good", "O"), ("in", "O"), ("London", "B-LOC"), ("!", "O")],
    [("John", "B-PER"), ("saw", "O"), ("the", "O"), ("EU", "B-ORG"), ("film", "O"), (".", "O")],
    [("Mary", "B-PER"), ("Smith", "I-PER"), ("hates", "O"), ("Berlin", "B-LOC")],
]


@pytest.fixture(autouse=True)
def _float32(float32_policy):
    """Models built in these tests compute in float32 (tests/conftest.py's `float32_policy`)."""


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory, tiny_vocab):
    from tfsft.training import train

    config = tiny_text_config(tmp_path_factory.mktemp("interpret_classifier"), tiny_vocab, max_steps=2)
    return train(config, log=lambda _: None).run_dir


@pytest.fixture(scope="session")
def tagger_run(tmp_path_factory, tiny_vocab):
    from tfsft.experiment import config_from_mapping
    from tfsft.training import train

    folder = tmp_path_factory.mktemp("interpret_tagger")
    data = folder / "train.txt"
    data.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in NER_SENTENCES * 4) + "\n",
                    encoding="utf-8")
    config = config_from_mapping({
        "name": "ner_tiny", "run_dir": str(folder / "run"), "model": tiny_model(tiny_vocab),
        "task": {"name": "token_classification", "casing": True},  # the casing model: backbone layers inline
        "data": {"files": {"train": str(data), "validation": str(data)}},
        "train": tiny_train(max_steps=2),
    })
    return train(config, log=lambda _: None).run_dir
