"""Readers: well-formed and malformed TSV/CSV/JSONL files, TFDS through mock_data."""

import json
from collections import Counter

import pytest

from tests.conftest import DATA_DIR
from tfsft.config import DataConfig, from_dict
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


def data_config(**data) -> DataConfig:
    return from_dict(DataConfig, data)


def test_headerless_columns_are_indices(tmp_path):
    path = write(tmp_path / "d.tsv", "good film\t1\nbad film\t0\n")
    ex = read_table(path, delimiter="\t", header=False, text_column="0", label_column="1")
    assert ex.texts == ["good film", "bad film"] and ex.labels == ["1", "0"]
    data = data_config(files={"train": str(path)}, header=False, text_column=0, label_column=1)  # integers
    assert read_split(data, "train").texts == ["good film", "bad film"]


@pytest.mark.skipif(not (DATA_DIR / "glue" / "cola").exists(), reason=f"CoLA not found under {DATA_DIR}")
def test_real_headerless_cola_file():
    data = data_config(files={"train": str(DATA_DIR / "glue" / "cola" / "train.tsv")}, header=False,
                       text_column=3, label_column=1)
    ex = read_split(data, "train")
    assert len(ex) == 8551 and set(ex.labels) == {"0", "1"} and ex.lines[0] == 1


def test_missing_column_names_file_and_header(tmp_path):
    path = write(tmp_path / "d.tsv", "\nsentence\tlabel\nx\t1\n")
    with pytest.raises(DataError, match=r"d.tsv:2: missing column\(s\) text; the header has sentence, label "
                                        r"\(if the file has no header, set data.header: false"):
        read_table(path, delimiter="\t")
    with pytest.raises(DataError, match=r"d.tsv:2: missing column\(s\) 2; the rows have 2 columns, 0 and 1 "
                                        r"\(data.header: false\)"):
        read_table(path, delimiter="\t", header=False, text_column="0", label_column="2")


def test_rows_with_more_or_fewer_fields_than_the_header_are_errors(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\ngood\t1\t\n")
    with pytest.raises(DataError, match=r"d.tsv:2: 3 field\(s\), expected 2 \(text, label\)$"):
        read_table(path, delimiter="\t")


def test_quoting_false_reads_quotes_as_text(tmp_path):
    text = 'text\tlabel\n"Hi," she said.\t1\nok\t0\n"Quoted\t1\n'  # a quote never closed
    path = write(tmp_path / "d.tsv", text)
    with pytest.raises(DataError, match=r"d.tsv:4: 1 field\(s\), expected 2 .*set data.quoting: false"):
        read_table(path, delimiter="\t")
    ex = read_table(path, delimiter="\t", quoting=False)
    assert ex.texts == ['"Hi," she said.', "ok", '"Quoted'] and ex.labels == ["1", "0", "1"]
    assert read_split(data_config(files={"train": str(path)}, quoting=False), "train").texts == ex.texts


@pytest.mark.skipif(not (DATA_DIR / "glue" / "mrpc").exists(), reason=f"MRPC not found under {DATA_DIR}")
def test_real_mrpc_file_with_a_byte_order_mark_and_literal_quotes():
    path = DATA_DIR / "glue" / "mrpc" / "msr_paraphrase_train.txt"
    data = data_config(files={"train": str(path)}, format="tsv", quoting=False, text_column="#1 String",
                       text_pair_column="#2 String", label_column="Quality")
    ex = read_split(data, "train")
    assert len(ex) == 4076 and set(ex.labels) == {"0", "1"}
    assert ex.texts[89].startswith('"We are declaring war') and ex.lines[89] == 91


def labelled_file(tmp_path, counts=(("neg", 60), ("pos", 40))):
    """A TSV sorted by label: `count` rows per label, row i's text `t<i>`."""
    rows = [label for label, count in counts for _ in range(count)]
    return write(tmp_path / "reviews.tsv", "text\tlabel\n" + "".join(f"t{i}\t{y}\n" for i, y in enumerate(rows)))


def test_slices_of_one_table_file(tmp_path):
    path = labelled_file(tmp_path)
    data = data_config(files={"train": f"{path.name}[:80%]", "validation": f"{path.name}[80%:]",
                              "test": f"{path.name}[-5:]"}, data_dir=str(tmp_path), max_examples=50)
    train, validation, test = (read_split(data, split) for split in ("train", "validation", "test"))
    assert len(train) == 50 and train.texts[0] == "t0"  # max_examples cuts the slice, not the file
    assert validation.texts == [f"t{i}" for i in range(80, 100)] and validation.lines[0] == 82
    assert test.texts == [f"t{i}" for i in range(95, 100)]
    assert validation.source == f"{path}[80%:]"
    with pytest.raises(DataError, match=r"reviews.tsv\[90%:10%\]: the slice selects no examples \(the file has 100\)"):
        read_split(data_config(files={"train": f"{path}[90%:10%]"}), "train")


@pytest.mark.parametrize("stratify", [False, True])
def test_seeded_random_split_of_one_file(tmp_path, stratify):
    path = labelled_file(tmp_path)
    data = data_config(files={"train": str(path)}, split={"validation": 0.1, "test": 0.2, "seed": 0,
                                                          "stratify": stratify})
    parts = {split: read_split(data, split) for split in ("train", "validation", "test")}
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [70, 10, 20]
    texts = [t for part in parts.values() for t in part.texts]
    assert sorted(texts) == sorted(f"t{i}" for i in range(100))  # disjoint, nothing left out
    assert parts["validation"].source == f"{path}[data.split.validation]"
    assert all(part.lines == sorted(part.lines) for part in parts.values())  # file order within a part
    assert read_split(data, "validation").texts == parts["validation"].texts  # the same split every time
    other = data_config(files={"train": str(path)}, split={"validation": 0.1, "test": 0.2, "seed": 1,
                                                           "stratify": stratify})
    assert read_split(other, "validation").texts != parts["validation"].texts
    counts = {split: Counter(part.labels) for split, part in parts.items()}
    if stratify:
        assert counts == {"train": {"neg": 42, "pos": 28}, "validation": {"neg": 6, "pos": 4},
                          "test": {"neg": 12, "pos": 8}}
    assert parts["test"].describe() == (f"{path}[data.split.test]: 20 examples; labels neg {counts['test']['neg']}, "
                                        f"pos {counts['test']['pos']}")


def test_random_split_errors(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\na\t1\nb\t0\nc\t1\n")
    data = data_config(files={"train": str(path)}, split={"validation": 0.1})
    with pytest.raises(DataError, match=r"d.tsv: data.split.validation: 0.1 of 3 examples is no example"):
        read_split(data, "validation")
    data = data_config(files={"train": str(path)}, split={"test": 0.4, "stratify": True})
    with pytest.raises(DataError, match=r"d.tsv: data.split.stratify: the examples have no labels"):
        read_split(data, "test", require_label=False)


def test_describe_counts_labels():
    from tfsft.data.readers import TextExamples

    ex = TextExamples(["a", "b", "c"], None, ["x", "y", "x"], [1, 2, 3], "f.tsv")
    assert ex.describe() == "f.tsv: 3 examples; labels x 2, y 1"
    assert TextExamples(["a"], None, None, [1], "f.txt").describe() == "f.txt: 1 examples"
    many = TextExamples(["a"] * 30, None, [str(i) for i in range(30)], list(range(30)), "s.tsv")
    assert many.describe() == "s.tsv: 30 examples; 30 distinct labels"


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


def test_a_relative_path_not_found_names_the_folder_it_was_looked_up_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"^data/nope.tsv: file not found \(looked up in {tmp_path}/data\)$"):
        read_table("data/nope.tsv", delimiter="\t")
    data = data_config(files={"train": "sst2/x.tsv"}, data_dir="../shared")
    with pytest.raises(DataError, match=rf"file not found \(looked up in {tmp_path.parent}/shared/sst2\)$"):
        read_split(data, "train")


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
