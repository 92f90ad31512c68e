"""Translation readers: parallel text files, TSV/JSONL pairs, TFDS, and their errors."""

import json

import pytest

from tfsft.config import DataConfig, TfdsConfig
from tfsft.data.parallel import read_parallel_text, read_translation_split
from tfsft.data.readers import DataError


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_parallel_files_are_read_line_by_line(tmp_path):
    src = write(tmp_path / "train.en", ["A dog runs.", "Two cats sleep."])
    tgt = write(tmp_path / "train.de", ["Ein Hund rennt.", "Zwei Katzen schlafen."])
    pairs = read_parallel_text(src, tgt)
    assert pairs.texts == ["A dog runs.", "Two cats sleep."]
    assert pairs.pairs == ["Ein Hund rennt.", "Zwei Katzen schlafen."]
    assert pairs.labels is None
    assert pairs.where(1) == f"{src}:2"


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "x.en", ["a", "b", "c"])
    tgt = write(tmp_path / "x.de", ["a", "b"])
    with pytest.raises(DataError) as error:
        read_parallel_text(src, tgt)
    message = str(error.value)
    assert str(src) in message and str(tgt) in message
    assert "3 lines" in message and "has 2" in message


def test_empty_line_is_an_error_with_its_line_unless_skipped(tmp_path):
    src = write(tmp_path / "x.en", ["a", "b", "c"])
    tgt = write(tmp_path / "x.de", ["A", "", "C"])
    with pytest.raises(DataError, match=r"x\.en:2: empty text"):
        read_parallel_text(src, tgt)
    pairs = read_parallel_text(src, tgt, skip_empty=True)
    assert pairs.texts == ["a", "c"] and pairs.skipped_empty == 1


def test_missing_file_and_bad_utf8_are_reported(tmp_path):
    src = write(tmp_path / "x.en", ["a"])
    with pytest.raises(DataError, match="x.de: file not found"):
        read_parallel_text(src, tmp_path / "x.de")
    (tmp_path / "y.de").write_bytes(b"ok\n\xff\xfe\n")
    write(tmp_path / "y.en", ["a", "b"])
    with pytest.raises(DataError, match=r"y\.de:2: bytes that are not UTF-8"):
        read_parallel_text(tmp_path / "y.en", tmp_path / "y.de")


def test_config_resolves_language_suffixes_tsv_and_jsonl(tmp_path):
    write(tmp_path / "train.en", ["hello", "bye"])
    write(tmp_path / "train.de", ["hallo", "tschüss"])
    write(tmp_path / "val.tsv", ["en\tde", "good morning\tguten Morgen"])
    (tmp_path / "test.jsonl").write_text(json.dumps({"en": "yes", "de": "ja"}) + "\n", encoding="utf-8")
    data = DataConfig(files={"train": "train", "validation": "val.tsv", "test": "test.jsonl"},
                      data_dir=str(tmp_path), source_language="en", target_language="de")
    assert read_translation_split(data, "train").pairs == ["hallo", "tschüss"]
    assert read_translation_split(data, "validation").pairs == ["guten Morgen"]
    test = read_translation_split(data, "test")
    assert (test.texts, test.pairs) == (["yes"], ["ja"])


def test_tsv_without_the_language_column_names_what_it_has(tmp_path):
    write(tmp_path / "val.tsv", ["en\tfr", "a\tb"])
    data = DataConfig(files={"validation": "val.tsv"}, data_dir=str(tmp_path), source_language="en",
                      target_language="de")
    with pytest.raises(DataError, match="missing column.*de.*header has en, fr"):
        read_translation_split(data, "validation")


def test_languages_are_required(tmp_path):
    data = DataConfig(files={"train": "train"}, data_dir=str(tmp_path))
    with pytest.raises(DataError, match="source_language and data.target_language"):
        read_translation_split(data, "train")


def test_tfds_translation_dataset_by_name():
    tfds = pytest.importorskip("tensorflow_datasets")
    data = DataConfig(tfds=TfdsConfig(name="wmt14_translate/de-en"), source_language="en", target_language="de")
    with tfds.testing.mock_data(num_examples=4):
        pairs = read_translation_split(data, "train")
    assert len(pairs) == 4
    assert all(isinstance(t, str) and t for t in pairs.texts + pairs.pairs)
    assert pairs.source == "tfds:wmt14_translate/de-en[train]"
