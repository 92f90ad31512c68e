"""Readers of tagged sentences: CoNLL, JSON lines, TFDS; tag schemes → IOB2."""

import json
import os
from pathlib import Path

import pytest

from tfsft.config import DataConfig, TfdsConfig
from tfsft.data.conll import read_conll, read_token_jsonl, read_token_split, read_token_tfds, to_iob2
from tfsft.data.readers import DataError

DATA_DIR = Path(os.environ.get("TFSFT_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
CONLL = DATA_DIR / "conll2003"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def convert(tags, scheme="auto"):
    return to_iob2(tags.split(), scheme, lambda j: f"f:{j + 1}")


def test_conll_sentences_columns_docstart_and_lines(tmp_path):
    path = write(tmp_path, "train.txt", (
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter B-PER\nBlackburn I-PER\n"  # no blank line at the end of the file
    ))
    examples = read_conll(path)
    assert examples.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert examples.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert examples.lines == [3, 8]
    assert examples.where(1, 1) == f"{path}:9"  # one token per line: the token's own line


def test_conll_max_examples(tmp_path):
    path = write(tmp_path, "t.txt", "a O\n\nb O\n\nc O\n")
    assert read_conll(path, max_examples=2).tokens == [["a"], ["b"]]


def test_conll_line_without_tag_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=rf"bad.txt:2: no tag after the token 'rejects'"):
        read_conll(path)


@pytest.mark.parametrize("tag", ["B_PER", "PER", "X-PER", "B-", "b-per"])
def test_ill_formed_tag_names_file_and_line(tmp_path, tag):
    path = write(tmp_path, "bad.txt", f"EU B-ORG\n\nPeter O\nBlackburn {tag}\n")
    with pytest.raises(DataError, match=rf"bad.txt:4: ill-formed tag '{tag}'"):
        read_conll(path)


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no sentences"):
        read_conll(write(tmp_path, "empty.txt", "\n-DOCSTART- O\n\n"))


def test_iob2_is_kept():
    assert convert("B-PER I-PER B-PER O B-LOC I-LOC") == "B-PER I-PER B-PER O B-LOC I-LOC".split()


def test_iob1_to_iob2():
    # IOB1: I- starts a chunk, B- only separates two adjacent chunks of one type.
    assert convert("I-PER I-PER B-PER O I-LOC I-ORG", "iob1") == "B-PER I-PER B-PER O B-LOC B-ORG".split()
    assert convert("I-PER I-PER B-PER O I-LOC I-ORG") == "B-PER I-PER B-PER O B-LOC B-ORG".split()


def test_bioes_to_iob2():
    tags = "B-PER I-PER E-PER S-LOC O S-PER S-PER B-ORG E-ORG"
    want = "B-PER I-PER I-PER B-LOC O B-PER B-PER B-ORG I-ORG".split()
    assert convert(tags, "bioes") == want
    assert convert(tags) == want


def test_strict_schemes_reject_what_they_do_not_allow():
    with pytest.raises(DataError, match=r"f:2: 'I-PER' follows 'O'; IOB2 chunks start with B-"):
        convert("O I-PER", "iob2")
    with pytest.raises(DataError, match=r"f:1: tag 'S-PER' is not IOB1"):
        convert("S-PER", "iob1")
    with pytest.raises(DataError, match=r"f:1: the PER chunk at 'B-PER' does not end with E-PER"):
        convert("B-PER O", "bioes")
    with pytest.raises(DataError, match=r"f:2: 'E-LOC' does not continue a LOC chunk"):
        convert("S-PER E-LOC", "bioes")


def test_jsonl_reader_and_its_errors(tmp_path):
    good = write(tmp_path, "a.jsonl", json.dumps({"tokens": ["EU", "rejects"], "tags": ["S-ORG", "O"]}) + "\n")
    examples = read_token_jsonl(good)
    assert examples.tags == [["B-ORG", "O"]]
    assert examples.where(0, 1) == f"{good}:1 (token 2)"
    bad = write(tmp_path, "b.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: 2 tokens but 1 tags"):
        read_token_jsonl(bad)
    missing = write(tmp_path, "c.jsonl", '{"words": ["a"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: missing key 'tokens'"):
        read_token_jsonl(missing)
    empty = write(tmp_path, "d.jsonl", '{"tokens": [], "tags": []}\n{"tokens": ["a"], "tags": ["O"]}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: a sentence with no tokens"):
        read_token_jsonl(empty)
    assert read_token_jsonl(empty, skip_empty=True).skipped_empty == 1


def test_read_token_split_uses_files_with_data_dir(tmp_path):
    write(tmp_path, "train.conll", "EU B-ORG\n")
    write(tmp_path, "dev.jsonl", json.dumps({"words": ["Peter"], "labels": ["B-PER"]}) + "\n")
    data = DataConfig(files={"train": "train.conll", "validation": "dev.jsonl"}, data_dir=str(tmp_path),
                      tokens_column="words", tags_column="labels")
    assert read_token_split(data, "train").tags == [["B-ORG"]]
    assert read_token_split(data, "validation").tokens == [["Peter"]]
    with pytest.raises(DataError, match="no data.files.test"):
        read_token_split(data, "test")


def test_tfds_conll2003_by_name_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):  # two IOB1-style records, in the builder's real feature layout
        records = {"tokens": [["EU", "rejects", "German"], ["Peter", "Blackburn"]], "ner": [[4, 0, 8], [2, 2]]}
        return tf.data.Dataset.from_tensor_slices({k: tf.ragged.constant(v) for k, v in records.items()})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        examples = read_token_tfds("conll2003", "train", tokens_key="tokens", tags_key="ner")
        data = DataConfig(tfds=TfdsConfig(name="conll2003", validation="dev"), tags_column="ner")
        validation = read_token_split(data, "validation")
    assert examples.source == "tfds:conll2003[train]"
    assert examples.label_names == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    assert examples.tokens == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert examples.tags == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]  # I-ORG, I-PER I-PER → IOB2
    assert examples.where(1, 0) == "tfds:conll2003[train]:2 (token 1)"
    assert validation.source == "tfds:conll2003[dev]"


@pytest.mark.skipif(not CONLL.exists(), reason=f"the real CoNLL-2003 files are not at {CONLL} (set TFSFT_DATA_DIR)")
def test_real_conll2003_official_counts():
    train = read_conll(CONLL / "train.txt", scheme="iob2")
    assert len(train) == 14_041
    assert sum(len(t) for t in train.tokens) == 203_621
    assert {tag for tags in train.tags for tag in tags} == {
        "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"}


# --- plain tags (part of speech, ...), word/TAG text and CoNLL-U ----------------------


def test_plain_tags_are_detected_and_kept(tmp_path):
    path = write(tmp_path, "pos.txt", "The DT\ncat NN\nsat VBD\n\nIt PRP\n's VBZ\n")
    examples = read_conll(path)
    assert examples.scheme == "none" and examples.tags == [["DT", "NN", "VBD"], ["PRP", "VBZ"]]
    chunks = write(tmp_path, "chunks.txt", "The B-NP\ncat I-NP\nsat B-VP\n")  # chunk tags are a span scheme
    assert read_conll(chunks).scheme == "iob2"
    assert read_conll(chunks, scheme="none").tags == [["B-NP", "I-NP", "B-VP"]]


def test_a_typo_in_entity_tags_is_still_an_error_that_names_plain_tags(tmp_path):
    path = write(tmp_path, "ner.txt", "EU B-ORG\nrejects O\nPeter B_PER\n")
    with pytest.raises(DataError, match=r"ner.txt:3: ill-formed tag 'B_PER'.*set task.scheme: none"):
        read_conll(path)


def test_word_slash_tag_text_splits_at_the_last_slash(tmp_path):
    path = write(tmp_path, "train.pos", "The/DT cat/NN ate/VBD 1/2/CD ./.\n\n  \nAnd/CC/ so/RB\n")
    with pytest.raises(DataError, match=r"train.pos:4 \(token 1\): 'And/CC/' is not word/TAG"):
        read_token_split(DataConfig(files={"train": str(path)}), "train")
    path.write_text("The/DT cat/NN ate/VBD 1/2/CD ./.\n\n  \nAC/DC/NNP rocks/VBZ\n", encoding="utf-8")
    examples = read_token_split(DataConfig(files={"train": str(path)}), "train")
    assert examples.tokens == [["The", "cat", "ate", "1/2", "."], ["AC/DC", "rocks"]]
    assert examples.tags == [["DT", "NN", "VBD", "CD", "."], ["NNP", "VBZ"]]
    assert examples.lines == [1, 4] and examples.scheme == "none"


CONLLU = (
    "# sent_id = 1\n# text = I didn't go.\n"
    "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
    "2-3\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tdid\tdo\tAUX\tVBD\t_\t4\taux\t_\t_\n"
    "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
    "4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n"
    "4.1\tgone\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_\n\n"
    "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n"
)


def test_conllu_words_with_upos_or_xpos(tmp_path):
    path = write(tmp_path, "dev.conllu", CONLLU)
    upos = read_token_split(DataConfig(files={"validation": str(path)}), "validation")
    assert upos.tokens == [["I", "did", "n't", "go", "."], ["Yes"]]
    assert upos.tags == [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["INTJ"]]
    assert upos.lines == [3, 11] and upos.scheme == "none"
    xpos = read_token_split(DataConfig(files={"validation": str(path)}, tags_column="xpos"), "validation")
    assert xpos.tags == [["PRP", "VBD", "RB", "VB", "."], ["UH"]]
    with pytest.raises(DataError, match=r"data.tags_column for CoNLL-U is upos or xpos. Received: 'ner'"):
        read_token_split(DataConfig(files={"validation": str(path)}, tags_column="ner"), "validation")


def test_conllu_errors_name_the_line(tmp_path):
    path = write(tmp_path, "bad.conllu", "1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n2\tgo\tgo\tVERB\n")
    with pytest.raises(DataError, match=r"bad.conllu:1: no XPOS tag \(\"_\"\) for 'I'; set data.tags_column: upos"):
        read_token_split(DataConfig(files={"train": str(path)}, tags_column="xpos"), "train")
    with pytest.raises(DataError, match=r"bad.conllu:2: 4 tab-separated fields; CoNLL-U has 10"):
        read_token_split(DataConfig(files={"train": str(path)}), "train")
