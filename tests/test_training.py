"""train() evaluates on validation and test; a run reads the data it was trained with, whatever the environment."""

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_model, tiny_text_config, tiny_train
from tfsft.experiment import config_from_mapping
from tfsft.training import evaluate, train


def write_split(folder: Path, name: str, rows: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [("good film", "pos"), ("bad dull film", "neg")] * rows
    (folder / name).write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in pairs[:rows]),
                               encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vocab):
    """A run on relative files under data_dir_1 (found through TFSFT_DATA_DIR), with a TFDS fallback in the config."""
    root = tmp_path_factory.mktemp("data")
    for folder, counts in ((root / "one", (16, 6, 4)), (root / "two", (16, 10, 8))):
        for name, rows in zip(("train.jsonl", "dev.jsonl", "test.jsonl"), counts):
            write_split(folder, name, rows)
    config = config_from_mapping({
        "name": "remember", "run_dir": str(root / "run"), "model": tiny_model(tiny_vocab),
        "task": {"name": "text_classification"},
        "data": {"files": {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"},
                 "tfds": {"name": "glue/sst2"}},
        "train": tiny_train(),
    })
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFSFT_DATA_DIR", str(root / "one"))
        result = train(config, log=lines.append)
    return root, result, lines


def test_train_evaluates_on_validation_and_test_and_prints_both_tables(trained):
    root, result, lines = trained
    assert result.metrics["split"] == "validation" and result.metrics["examples"] == 6
    assert result.test_metrics["split"] == "test" and result.test_metrics["examples"] == 4
    assert json.loads((result.run_dir / "metrics_test.json").read_text()) == result.test_metrics
    titles = [line.split()[0] for line in lines if line.split("\n")[0].endswith("  value")]  # format_table's header
    assert titles == ["validation", "test"]


def test_train_logs_each_split_with_its_label_counts(trained):
    root, _, lines = trained
    for name, each in (("train", 8), ("dev", 3), ("test", 2)):
        assert f"{root / 'one' / name}.jsonl: {2 * each} examples; labels neg {each}, pos {each}" in lines


def test_without_a_validation_split_train_says_so(tmp_path, tiny_vocab):
    lines = []
    result = train(tiny_text_config(tmp_path, tiny_vocab, splits=("train",), max_steps=2), log=lines.append)
    assert result.metrics == {} and result.test_metrics == {}
    assert any(line.startswith("No validation split in the config") and "best loss" in line for line in lines)


def test_a_run_reads_the_data_it_was_trained_with(trained, monkeypatch):
    """TFSFT_DATA_DIR unset (the config's TFDS source would be used) or elsewhere: the files of training."""
    root, result, _ = trained
    recorded = json.loads((result.run_dir / "data.json").read_text())
    assert recorded == {"source": "files", "data_dir": str(root / "one"),
                        "files": {s: str(root / "one" / f) for s, f in
                                  (("train", "train.jsonl"), ("validation", "dev.jsonl"), ("test", "test.jsonl"))}}
    monkeypatch.delenv("TFSFT_DATA_DIR", raising=False)
    assert evaluate(result.run_dir, "test", log=lambda _: None)["examples"] == 4
    monkeypatch.setenv("TFSFT_DATA_DIR", str(root / "two"))
    assert evaluate(result.run_dir, "test", log=lambda _: None)["examples"] == 4


def test_an_explicit_data_dir_or_override_wins(trained, monkeypatch):
    root, result, _ = trained
    monkeypatch.delenv("TFSFT_DATA_DIR", raising=False)
    assert evaluate(result.run_dir, "test", log=lambda _: None, data_dir=root / "two")["examples"] == 8
    override = f"data.files.test={root / 'two' / 'dev.jsonl'}"
    assert evaluate(result.run_dir, "test", log=lambda _: None, overrides=[override])["examples"] == 10


def test_a_tfds_run_stays_on_tfds_when_a_data_dir_appears(tmp_path, monkeypatch):
    from tfsft.config import save_config
    from tfsft.run_dir import _run_config, save_data_sources

    config = config_from_mapping({"name": "x", "task": {"name": "text_classification"},
                                  "data": {"files": {"train": "sst2/train.tsv"}, "tfds": {"name": "glue/sst2"}}})
    monkeypatch.delenv("TFSFT_DATA_DIR", raising=False)
    save_config(config, tmp_path / "config.yaml")
    save_data_sources(tmp_path, config.data)
    assert json.loads((tmp_path / "data.json").read_text()) == {"source": "tfds", "tfds": "glue/sst2"}
    monkeypatch.setenv("TFSFT_DATA_DIR", str(tmp_path))
    assert not _run_config(tmp_path, None, ()).data.use_files()


def test_train_leaves_the_global_dtype_policy_as_it_found_it(tmp_path, tiny_vocab, float32_policy):
    import keras

    config = tiny_text_config(tmp_path, tiny_vocab, precision="mixed_bfloat16", max_steps=2, eval_every_steps=2)
    result = train(config, log=lambda _: None)
    assert keras.config.dtype_policy().name == "float32"
    policies = {layer.dtype_policy.name for layer in keras.saving.load_model(result.run_dir / "model.keras").layers}
    assert "mixed_bfloat16" in policies, "the model itself was built under train.precision"
