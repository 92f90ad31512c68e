"""Corpus readers: documents from text files, tables and TFDS; slices; errors."""

import pytest

from tfsft.config import DataConfig
from tfsft.data.corpus import (
    read_corpus,
    read_corpus_file,
    read_text_file,
    read_tfds_corpus,
    split_slice,
)
from tfsft.data.readers import DataError

TEXT = "First line.\n\nSecond paragraph, line one.\nline two.\n\n\nThird.\n"


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_lines_mode_makes_each_non_blank_line_a_document(text_file):
    corpus = read_text_file(text_file, "lines")
    assert corpus.texts == ["First line.", "Second paragraph, line one.", "line two.", "Third."]
    assert corpus.lines == [1, 3, 4, 7]
    assert corpus.where(2) == f"{text_file}:4"


def test_paragraphs_mode_joins_the_lines_of_each_block(text_file):
    corpus = read_text_file(text_file, "paragraphs")
    assert corpus.texts == ["First line.", "Second paragraph, line one.\nline two.", "Third."]
    assert corpus.lines == [1, 3, 7]


def test_slices_split_one_file_into_disjoint_parts(text_file):
    whole = read_corpus_file(text_file)
    head = read_corpus_file(f"{text_file}[:50%]")
    tail = read_corpus_file(f"{text_file}[50%:]")
    assert head.texts + tail.texts == whole.texts
    assert read_corpus_file(f"{text_file}[-1:]").texts == ["Third."]
    assert read_corpus_file(f"{text_file}[1:3]").lines == [3, 4]
    assert split_slice("a/b.txt[:95%]")[0] == "a/b.txt"
    assert split_slice("a/b.txt")[1] is None


def test_empty_slice_is_an_error_naming_the_file(text_file):
    with pytest.raises(DataError, match=r"corpus\.txt\[3:1\]: the slice selects no documents"):
        read_corpus_file(f"{text_file}[3:1]")


def test_table_files_contribute_their_text_column(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nit 's a charming film \t1\na dull mess \t0\n", encoding="utf-8")
    corpus = read_corpus_file(path, text_column="sentence")
    assert corpus.texts == ["it 's a charming film", "a dull mess"]
    assert corpus.lines == [2, 3]


def test_empty_and_blank_files_are_errors(tmp_path):
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_bytes(b"")
    blank.write_text("\n  \n\n", encoding="utf-8")
    for path in (empty, blank):
        with pytest.raises(DataError, match=rf"{path.name}: no text"):
            read_text_file(path)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: bytes that are not UTF-8"):
        read_text_file(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_text_file(tmp_path / "nope.txt")


def test_read_corpus_concatenates_extra_files_and_tracks_sources(tmp_path, text_file):
    table = tmp_path / "t.tsv"
    table.write_text("sentence\tlabel\nfrom the table \t1\n", encoding="utf-8")
    data = DataConfig(files={"train": "t.tsv", "validation": "corpus.txt[-1:]"}, data_dir=str(tmp_path),
                      text_column="sentence")
    train = read_corpus(data, "train", "lines", extra_files=("corpus.txt",))
    assert train.texts == ["from the table", "First line.", "Second paragraph, line one.", "line two.", "Third."]
    assert train.where(0) == f"{table}:2"
    assert train.where(3) == f"{text_file}:4"
    assert read_corpus(data, "validation").texts == ["Third."]
    capped = read_corpus(DataConfig(files={"train": "corpus.txt"}, data_dir=str(tmp_path), max_examples=2), "train")
    assert len(capped) == 2
    with pytest.raises(DataError, match="no data.files.test"):
        read_corpus(data, "test")


def test_tfds_text_dataset_by_name():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        corpus = read_tfds_corpus("imdb_reviews", "train", text_column="text")
    assert len(corpus) == 6
    assert all(isinstance(t, str) and t.strip() for t in corpus.texts)
    assert corpus.where(1) == "tfds:imdb_reviews[train]:2"
    with tfds.testing.mock_data(num_examples=2), pytest.raises(DataError, match="no feature 'body'"):
        read_tfds_corpus("imdb_reviews", "train", text_column="body")
