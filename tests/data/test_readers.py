"""Readers: well-formed and malformed TSV/CSV/JSONL files, TFDS through mock_data."""

import json

import pytest

from tfsft.config import DataConfig
from tfsft.data.conll import read_conll
from tfsft.data.corpus import read_text_file
from tfsft.data.readers import DataError, decoded_lines, read_jsonl, read_split, read_table, read_tfds

BOM = "\ufeff"


def write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tsv_with_header_pairs_and_labels(tmp_path):
    path = write(tmp_path / "d.tsv", "premise\thypothesis\tlabel\na cat\ta pet\tyes\nrain\tsun\tno\n")
    ex = read_table(path, delimiter="\t", text_column="premise", text_pair_column="hypothesis")
    assert ex.texts == ["a cat", "rain"]
    assert ex.pairs == ["a pet", "sun"]
    assert ex.labels == ["yes", "no"]
    assert ex.lines == [2, 3]


def test_csv_quoted_fields_with_commas_and_newlines(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n"hello, world",1\n"two\nlines",0\nplain,1\n')
    ex = read_table(path, delimiter=",")
    assert ex.texts == ["hello, world", "two\nlines", "plain"]
    assert ex.labels == ["1", "0", "1"]
    assert ex.lines == [2, 4, 5]  # the line where each row ends


def test_headerless_columns_are_indices(tmp_path):
    path = write(tmp_path / "d.tsv", "good film\t1\nbad film\t0\n")
    ex = read_table(path, delimiter="\t", header=False, text_column="0", label_column="1")
    assert ex.texts == ["good film", "bad film"] and ex.labels == ["1", "0"]


def test_missing_column_names_file_and_header(tmp_path):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\nx\t1\n")
    with pytest.raises(DataError, match=r"d.tsv:1: missing column\(s\) text; the header has sentence, label"):
        read_table(path, delimiter="\t")


def test_undecodable_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "d.tsv", b"text\tlabel\nok\t1\nbad \xff\xfe\t0\n", mode="wb")
    with pytest.raises(DataError, match=r"d.tsv:3: bytes that are not UTF-8 at column 5"):
        read_table(path, delimiter="\t")


def test_a_utf8_byte_order_mark_is_removed_from_every_format(tmp_path):
    headerless = write(tmp_path / "n.csv", BOM + '"1",good\n"0",bad\n')
    assert read_table(headerless, delimiter=",", header=False, text_column="1", label_column="0").labels == ["1", "0"]
    header = write(tmp_path / "h.tsv", BOM + "text\tlabel\ngood\t1\n")
    assert read_table(header, delimiter="\t").texts == ["good"]
    assert read_jsonl(write(tmp_path / "d.jsonl", BOM + '{"text": "a", "label": "x"}\n')).texts == ["a"]
    assert read_conll(write(tmp_path / "d.conll", BOM + "EU B-ORG\nrejects O\n")).tokens == [["EU", "rejects"]]
    assert read_text_file(write(tmp_path / "d.txt", BOM + "First.\n")).texts == ["First."]
    inner = write(tmp_path / "inner.txt", "a\n" + BOM + "b\n")  # only a mark that starts the file is one
    assert [text for _, text in decoded_lines(inner)] == ["a\n", BOM + "b\n"]


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="the file is empty"):
        read_table(write(tmp_path / "e.tsv", ""), delimiter="\t")
    with pytest.raises(DataError, match="no examples"):
        read_table(write(tmp_path / "h.tsv", "text\tlabel\n"), delimiter="\t")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.tsv", delimiter="\t")


def test_short_row_is_an_error(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\nonly text\n")
    with pytest.raises(DataError, match=r"d.tsv:2: 1 field\(s\), expected 2"):
        read_table(path, delimiter="\t")


def test_empty_text_is_an_error_unless_skipped_and_counted(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\ngood\t1\n  \t0\nfine\t1\n")
    with pytest.raises(DataError, match=r"d.tsv:3: empty text.*skip_empty"):
        read_table(path, delimiter="\t")
    ex = read_table(path, delimiter="\t", skip_empty=True)
    assert ex.texts == ["good", "fine"] and ex.skipped_empty == 1


def test_missing_label_is_an_error(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\ngood\t\n")
    with pytest.raises(DataError, match=r"d.tsv:2: missing label"):
        read_table(path, delimiter="\t")


def test_jsonl_reader_and_its_errors(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ex = read_jsonl(path)
    assert ex.texts == ["a", "b"] and ex.labels == ["x", "y"]
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n'))
    with pytest.raises(DataError, match=r"k.jsonl:1: missing key 'label'"):
        read_jsonl(write(tmp_path / "k.jsonl", '{"text": "a"}\n'))
    with pytest.raises(DataError, match=r"l.jsonl:1: expected a JSON object"):
        read_jsonl(write(tmp_path / "l.jsonl", '["a", 1]\n'))


def test_max_examples_limits_rows(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\n" + "".join(f"t{i}\t1\n" for i in range(10)))
    assert len(read_table(path, delimiter="\t", max_examples=4)) == 4


def test_read_split_resolves_files_against_data_dir(tmp_path, monkeypatch):
    write(tmp_path / "train.tsv", "sentence\tlabel\nnice\t1\n")
    data = DataConfig(files={"train": "train.tsv"}, text_column="sentence",
                      tfds=None, data_dir=str(tmp_path))
    assert read_split(data, "train").texts == ["nice"]
    with pytest.raises(DataError, match="no data.files.validation"):
        read_split(data, "validation")


def test_files_win_when_data_dir_is_set_else_tfds(tmp_path, monkeypatch):
    from tfsft.config import TfdsConfig

    data = DataConfig(files={"train": "x.tsv"}, tfds=TfdsConfig(name="glue/sst2"))
    monkeypatch.delenv("TFSFT_DATA_DIR", raising=False)
    assert not data.use_files()
    monkeypatch.setenv("TFSFT_DATA_DIR", str(tmp_path))
    assert data.use_files() and data.file_path("train") == tmp_path / "x.tsv"


def test_tfds_reader_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ex = read_tfds("glue/sst2", "train", text_column="sentence")
    assert len(ex) == 12
    assert ex.label_names == ["negative", "positive"]
    assert set(ex.labels) <= {"negative", "positive"}
    assert ex.source == "tfds:glue/sst2[train]"


def test_tfds_missing_feature_is_named():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(DataError, match="no feature 'text'"):
            read_tfds("glue/sst2", "train", text_column="text")
