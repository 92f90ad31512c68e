"""Token classification: alignment, windows, chunk decoding, metrics, a shrunk real run and export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from seqeval.metrics import f1_score
from seqeval.metrics.sequence_labeling import get_entities

from tfsft.config import ConfigError
from tfsft.data.conll import TokenExamples, read_conll
from tfsft.data.readers import DataError
from tfsft.experiment import config_from_mapping, load_config
from tfsft.models.casing import CASINGS, word_casing
from tfsft.tasks.token_classification import (
    TokenClassificationOptions,
    TokenClassificationTask,
)
from tfsft.tasks.token_classification.decoding import (
    EntityF1,
    TagAccuracy,
    iob2_chunks,
    iob2_viterbi,
    label_tables,
)
from tfsft.tasks.token_classification.serving import tag_probabilities
from tfsft.tasks.token_classification.windows import WordWindowEncoder
from tfsft.tasks.token_classification.words import WORD_SPLITTERS, split_words

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TFSFT_DATA_DIR", REPO / ".." / "shared" / "data"))
CONLL = DATA_DIR / "conll2003"
needs_conll = pytest.mark.skipif(not CONLL.exists(),
                                 reason=f"the real CoNLL-2003 files are not at {CONLL} (set TFSFT_DATA_DIR)")
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
WORDS = ["eu", "rejects", "german", "call", "to", "boycott", "british", "lamb", ".", "peter", "the"]


def write_vocabulary(path: Path, words) -> Path:
    """A WordPiece vocabulary: specials, the given words, single characters and ##characters."""
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,-'"))
    entries = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words)) + chars + [f"##{c}" for c in chars]
    path.write_text("\n".join(dict.fromkeys(entries)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ner_tokenizer(tmp_path):
    vocabulary = write_vocabulary(tmp_path / "vocab.txt", WORDS)
    return keras_hub.models.BertTokenizer(vocabulary=str(vocabulary), lowercase=True)


def ner_task(**options) -> TokenClassificationTask:
    task = TokenClassificationTask(TokenClassificationOptions(**options), data_config=None)
    task.labels = list(LABELS)
    return task


def examples(tokens, tags):
    return TokenExamples(tokens, tags, list(range(1, len(tokens) + 1)), "mem")


def windows(encoded_split):
    return [(f["token_ids"].numpy(), y.numpy(), w.numpy()) for f, y, w in encoded_split.dataset]


# --- alignment ------------------------------------------------------------


def test_label_on_first_subword_only(ner_tokenizer):
    task = ner_task()
    encoder = task.make_encoder(ner_tokenizer, 32)
    # "blackburn" is not in the vocabulary: 9 subwords b ##l ##a ...
    split = task.encode(examples([["Peter", "Blackburn", "rejects"]], [["B-PER", "I-PER", "O"]]), encoder, True)
    ((ids, target, weight),) = windows(split)
    assert len(ids) == 2 + 1 + 9 + 1  # [CLS] peter b ##l … ##n rejects [SEP]
    assert weight.tolist() == [0, 1, 1] + [0] * 8 + [1, 0]
    index = {label: i for i, label in enumerate(LABELS)}
    assert target[weight > 0].tolist() == [index["B-PER"] + 1, index["I-PER"] + 1, index["O"] + 1]
    assert target[weight == 0].tolist() == [0] * 10  # unlabelled positions carry 0


def test_label_all_subwords_continues_b_with_i(ner_tokenizer):
    task = ner_task(label_all_subwords=True)
    encoder = task.make_encoder(ner_tokenizer, 32)
    split = task.encode(examples([["Blackburn", "rejects"]], [["B-PER", "O"]]), encoder, True)
    ((_, target, weight),) = windows(split)
    assert weight.tolist() == [0] + [1] * 10 + [0]
    names = [LABELS[t - 1] for t in target[1:-1]]
    assert names == ["B-PER"] + ["I-PER"] * 8 + ["O"]
    # evaluation still reads each word once, at its first subword
    ((_, _, eval_weight),) = windows(task.encode(examples([["Blackburn", "rejects"]], [["B-PER", "O"]]), encoder, False))
    assert eval_weight.tolist() == [0, 1] + [0] * 8 + [1, 0]


@pytest.mark.parametrize("sequence_length,stride", [(8, 1), (8, 3), (8, 6), (12, None), (5, 2)])
def test_windows_cover_every_word_exactly_once(ner_tokenizer, sequence_length, stride):
    rng = np.random.default_rng(sequence_length * 10 + (stride or 0))
    vocab = WORDS + ["blackburn", "xq", "zz9"]  # some words split into several subwords
    sentences = [[str(rng.choice(vocab)) for _ in range(rng.integers(0, 25))] for _ in range(30)]
    words = tf.RaggedTensor.from_row_lengths(tf.constant([w for s in sentences for w in s], tf.string),
                                             [len(s) for s in sentences])
    encoder = WordWindowEncoder(ner_tokenizer, sequence_length, stride)
    out = tf.function(encoder)(words)
    lengths = out["padding_mask"].numpy().sum(axis=1)
    assert lengths.max() <= sequence_length
    owned = out["token_word"].numpy()[(out["token_first"] & out["token_owner"]).numpy()]
    assert sorted(owned.tolist()) == list(range(len(words.flat_values)))  # each word exactly once
    subwords = [np.asarray(ner_tokenizer.tokenize(w)).tolist() or [1] for s in sentences for w in s]
    rows = out["window_row"].numpy()
    ids = out["token_ids"].numpy()
    offset = 0
    for b, sentence in enumerate(sentences):
        want = [t for words_ in subwords[offset:offset + len(sentence)] for t in words_]
        offset += len(sentence)
        for k in np.flatnonzero(rows == b):  # each window is a contiguous slice of the sentence's subwords
            window = ids[k, 1:lengths[k] - 1].tolist()
            assert len(window) == min(len(want), sequence_length - 2)
            assert any(want[i:i + len(window)] == window for i in range(len(want) - len(window) + 1))


def test_merged_predictions_come_from_each_words_first_subword(ner_tokenizer):
    """A fake model that predicts each position's token id: merged word predictions = first subword ids."""

    class EchoModel:
        def __call__(self, features, training=False):
            return tf.one_hot(features["token_ids"], ner_tokenizer.vocabulary_size()) * 10.0

    sentences = [["Peter", "Blackburn", "rejects", "the", "call"] * 4, ["lamb"], []]
    words = tf.ragged.constant(sentences, dtype=tf.string, ragged_rank=1)
    encoder = WordWindowEncoder(ner_tokenizer, sequence_length=9, stride=2)
    probabilities = tf.function(lambda w: tag_probabilities(EchoModel(), encoder, w, ["token_ids"]))(words)
    first = [np.asarray(ner_tokenizer.tokenize(w))[0] for s in sentences for w in s]
    assert np.argmax(probabilities.numpy(), axis=-1).tolist() == first


def test_stride_must_leave_no_gap(ner_tokenizer):
    with pytest.raises(ValueError, match=r"task.stride must be in \[1, model.sequence_length - 2 = 6\]"):
        WordWindowEncoder(ner_tokenizer, 8, stride=7)


# --- decoding and metrics ---------------------------------------------------


def random_tag_sequences(seed, count=200):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, len(LABELS), size=rng.integers(0, 12)).tolist() for _ in range(count)]


def test_chunks_match_seqeval_conlleval_rules():
    sequences = random_tag_sequences(0)
    types, label_types, label_begins = label_tables(LABELS)
    ragged = tf.RaggedTensor.from_row_lengths(tf.constant([t for s in sequences for t in s], tf.int32),
                                              [len(s) for s in sequences])
    is_start, end, kind = (x.numpy() for x in iob2_chunks(ragged, tf.constant(label_types), tf.constant(label_begins)))
    offset = 0
    for sequence in sequences:
        mine = sorted((types[kind[i] - 1], i - offset, end[i] - 1 - offset)
                      for i in range(offset, offset + len(sequence)) if is_start[i])
        assert mine == sorted(get_entities([LABELS[t] for t in sequence]))
        offset += len(sequence)


VITERBI_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def best_valid_sequence(scores):
    """Brute force: the highest-scoring valid IOB2 sequence of a (W, C) score table."""
    import itertools

    labels = VITERBI_LABELS

    def valid(sequence):
        return all(not labels[c].startswith("I-") or (j and labels[sequence[j - 1]][2:] == labels[c][2:]
                                                      and sequence[j - 1] != 0) for j, c in enumerate(sequence))

    return list(max((c for c in itertools.product(range(len(labels)), repeat=len(scores)) if valid(c)),
                    key=lambda c: sum(scores[j, k] for j, k in enumerate(c))))


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("lengths", [(0, 1, 2, 4, 5, 3, 0), (1,), (1, 1, 1), (0,), (0, 1), ()])
def test_viterbi_finds_the_best_valid_iob2_sequence(lengths, graph):
    """Also for batches of only one-word or empty sentences, in a graph with unknown shapes (as in the SavedModel)."""
    _, label_types, label_begins = label_tables(VITERBI_LABELS)
    decode = lambda lp: iob2_viterbi(lp, tf.constant(label_types), tf.constant(label_begins))
    if graph:
        decode = tf.function(decode, input_signature=[
            tf.RaggedTensorSpec([None, None, len(VITERBI_LABELS)], tf.float32, ragged_rank=1)])
    rng = np.random.default_rng(3)
    sentences = [rng.normal(size=(n, len(VITERBI_LABELS))).astype(np.float32) for n in lengths]
    flat = np.concatenate(sentences) if sentences else np.zeros((0, len(VITERBI_LABELS)), np.float32)
    decoded = decode(tf.RaggedTensor.from_row_lengths(tf.constant(flat), list(lengths), validate=False)).to_list()
    assert decoded == [best_valid_sequence(scores) for scores in sentences]


def test_no_chunks_and_no_words_decode_to_nothing():
    _, label_types, label_begins = label_tables(LABELS)
    for rows in ([[0, 0], [0]], [[], []]):  # only O; no words at all
        ragged = tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1)
        is_start, end, _ = iob2_chunks(ragged, tf.constant(label_types), tf.constant(label_begins))
        assert not is_start.numpy().any() and not end.numpy().any()
    metric = EntityF1(LABELS)
    metric.update_state(np.ones((2, 3), np.int32), np.eye(len(LABELS), dtype=np.float32)[np.zeros((2, 3), int)])
    assert float(metric.result()) == 0.0


def test_entity_f1_and_accuracy_metrics_equal_seqeval():
    gold, pred = random_tag_sequences(1, 64), random_tag_sequences(2, 64)
    pred = [(p + g)[:len(g)] if len(p) < len(g) else p[:len(g)] for p, g in zip(pred, gold)]
    width = 12
    y_true = np.zeros((64, width), np.int32)  # label id + 1, 0 = padding
    logits = np.zeros((64, width, len(LABELS)), np.float32)
    for i, (g, p) in enumerate(zip(gold, pred)):
        y_true[i, :len(g)] = np.array(g) + 1
        logits[i, np.arange(len(p)), p] = 1.0
    metric, accuracy = EntityF1(LABELS), TagAccuracy()
    metric.update_state(y_true, logits)
    accuracy.update_state(y_true, logits)
    names = lambda seqs: [[LABELS[t] for t in s] for s in seqs]
    assert float(metric.result()) == pytest.approx(f1_score(names(gold), names(pred)), abs=1e-6)
    total = sum(len(g) for g in gold)
    assert float(accuracy.result()) == pytest.approx(sum(np.sum(np.array(g) == np.array(p)) for g, p in zip(gold, pred)) / total)


def test_split_words_offsets_match_the_text():
    texts = ["EU rejects U.S. lamb, said Zürich's O'Neill on 1996-08-22.", "", "  a  "]
    words, starts, ends, _, _ = tf.function(split_words)(tf.constant(texts))
    for text, w, s, e in zip(texts, words.to_list(), starts.to_list(), ends.to_list()):
        assert [text[a:b] for a, b in zip(s, e)] == [x.decode() for x in w]
    assert [x.decode() for x in words[0].numpy()] == [
        "EU", "rejects", "U.S.", "lamb", ",", "said", "Zürich", "'s", "O'Neill", "on", "1996-08-22", "."]


@pytest.mark.parametrize("splitter,expected", [
    ("default", ["I", "didn", "'t", "see", "John", "'s", "1", ",", "000", "cats", ".", ".", ".", "U.S.", "e-mail"]),
    ("penn_treebank", ["I", "did", "n't", "see", "John", "'s", "1,000", "cats", "...", "U.S.", "e-mail"]),
    ("whitespace", ["I", "didn't", "see", "John's", "1,000", "cats...", "U.S.", "e-mail"]),
])
def test_word_splitters_and_their_offsets(splitter, expected):
    texts = ["I didn't see John's 1,000 cats... U.S. e-mail", "", "Zürich isn’t  far."]
    words, starts, ends, _, _ = tf.function(WORD_SPLITTERS[splitter])(tf.constant(texts))
    for text, w, s, e in zip(texts, words.to_list(), starts.to_list(), ends.to_list()):
        assert [text[a:b] for a, b in zip(s, e)] == [x.decode() for x in w]
    assert [x.decode() for x in words[0].numpy()] == expected
    assert words[1].shape[0] == 0
    if splitter == "penn_treebank":
        assert [x.decode() for x in words[2].numpy()] == ["Zürich", "is", "n’t", "far", "."]


# --- options, labels and errors ----------------------------------------------


def test_options_validation_reports_every_problem():
    raw = {"task": {"name": "token_classification", "labels": ["B-PER", "X"], "stride": 0, "dropout": 1.5},
           "data": {"files": {"train": "t.txt"}}}
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw)
    message = str(info.value)
    assert "task.labels: must include 'O'" in message
    assert "task.labels: 'B-PER': give both B-PER and I-PER" in message
    assert "task.labels: 'X' is not an IOB2 tag" in message
    assert "task.stride: must be > 0" in message
    assert "task.dropout: must be in [0, 1)" in message


def test_labels_inferred_from_train_and_unknown_tag_names_file_and_line(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("EU B-ORG\nrejects O\n\nPeter I-PER\n", encoding="utf-8")  # IOB1 I-PER → B-PER
    test = tmp_path / "test.txt"
    test.write_text("Paris B-LOC\n\nPeter B-PER\nsaid O\nin O\nZurich B-GPE\n", encoding="utf-8")
    task = TokenClassificationTask(TokenClassificationOptions(), data_config=None)
    task.fit_labels(read_conll(train))
    assert task.labels == ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    with pytest.raises(DataError, match=r"test.txt:1: tag 'B-LOC' is not in the label set"):
        task.targets(read_conll(test))
    task.labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    with pytest.raises(DataError, match=r"test.txt:6: tag 'B-GPE' is not in the label set"):
        task.targets(read_conll(test))


def test_shipped_config_loads():
    config = load_config(REPO / "configs" / "conll2003_minilm.yaml")
    assert config.task.name == "token_classification"
    assert config.data.files["test"] == "conll2003/test.txt"
    assert config.data.tfds.name == "conll2003"


# --- the casing feature ------------------------------------------------------


def test_word_casing_classes():
    words = ["rejects", "German", "Zürich", "A", "EU", "U.S.", "iPhone", "McDonald", "1996", "3-2", ".", "--", "ÉCOLE"]
    expected = ["lower", "title", "title", "title", "upper", "upper", "mixed", "mixed", "numeric", "numeric",
                "other", "other", "upper"]
    assert [CASINGS[i] for i in word_casing(tf.constant(words)).numpy()] == expected


def test_encoder_gives_every_subword_its_words_casing(ner_tokenizer):
    encoder = WordWindowEncoder(ner_tokenizer, sequence_length=8, stride=3, casing=True)
    words = tf.ragged.constant([["EU", "rejects", "Germanyx", "1996", "."], ["Peter"]])
    out = tf.function(encoder)(words)
    casing, word = out["token_casing"].numpy(), out["token_word"].numpy()
    per_word = word_casing(words.flat_values).numpy()
    assert (casing[word >= 0] == per_word[word[word >= 0]]).all()  # "Germanyx" → several subwords, all title
    assert (casing[word < 0] == 0).all()  # [CLS], [SEP], padding
    assert CASINGS[per_word[2]] == "title" and (word == 2).sum() > 1


def tiny_bert(vocabulary_size):
    return keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=1, num_heads=2, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=24)


def test_casing_model_starts_as_the_pretrained_backbone_and_learns_the_casing_table(ner_tokenizer):
    backbone = tiny_bert(ner_tokenizer.vocabulary_size())
    plain, cased = ner_task().build_model(backbone), ner_task(casing=True).build_model(backbone)
    cased.get_layer("tag_logits").set_weights(plain.get_layer("tag_logits").get_weights())  # same head
    encoded = tf.function(WordWindowEncoder(ner_tokenizer, 16, casing=True))(tf.ragged.constant([["EU", "rejects", "German", "lamb"]]))
    inputs = {k: encoded[k] for k in cased.input}
    np.testing.assert_allclose(cased(inputs, training=False), plain({k: inputs[k] for k in plain.input}, training=False),
                               atol=1e-6)  # zero-initialised casing table: the backbone unchanged
    table = cased.get_layer("casing_embedding").embeddings
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(cased(inputs, training=False) ** 2)
    gradient = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    used = np.unique(inputs["token_casing"].numpy())
    assert np.abs(gradient[used]).sum() > 0 and not gradient[np.setdiff1d(np.arange(len(CASINGS)), used)].any()


def test_casing_needs_a_bert_family_backbone():
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    other = keras.Model({"token_ids": token_ids, "padding_mask": mask}, keras.layers.Embedding(10, 4)(token_ids))
    with pytest.raises(ConfigError, match="task.casing: needs a BERT-family backbone"):
        ner_task(casing=True).build_model(other)


# --- export round trip; a shrunk real run: train, evaluate, export ------------

_SPANS_SCRIPT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert "tfsft" not in sys.modules and "keras_hub" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
batches = json.loads(sys.stdin.read())
out = [{k: v.numpy().tolist() for k, v in model.signatures["serving_default"](text=tf.constant(texts)).items()}
       for texts in batches]
tokens = {}
for name, words, lengths in (("mixed", [["EU", "rejects", "German"], ["Peter", "", ""]], [3, 1]),
                             ("one_word", [["EU"], ["Peter"]], [1, 1]), ("none", [[""]], [0])):
    result = model.signatures["serve_tokens"](tokens=tf.constant(words), lengths=tf.constant(lengths, tf.int32))
    tokens[name] = {k: result[k].numpy().tolist() for k in ("word_count", "word_tags", "entity_count")}
print(json.dumps({"text": out, "tokens": tokens}, default=lambda b: b.decode()))
"""


@pytest.mark.parametrize("casing", [False, True])
def test_export_round_trip_returns_spans_of_the_input_text(ner_tokenizer, tmp_path, casing):
    """serving_default and serve_tokens reloaded in a fresh process (TF + TF Text only)."""
    from tfsft.export import predict, verify_export

    task = ner_task(casing=casing)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=ner_tokenizer.vocabulary_size(), num_layers=1,
                                             num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24)
    module = task.serving_module(task.build_model(backbone), task.make_encoder(ner_tokenizer, 24))
    saved = tmp_path / "saved"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve, **module.extra_signatures()})
    verify_export(saved, module, task.sample_inputs())  # fresh process == in-memory module

    texts = ["EU rejects German call to boycott British lamb.", "Peter Blackburn went to Zürich.", "",
             " ".join(["The European Commission said on Thursday it disagreed with German advice."] * 6)]
    small = [["Hello"], ["EU", "Peter"], [""], ["  \t "], ["", " "]]  # only one-word or empty sentences
    run = subprocess.run([sys.executable, "-c", _SPANS_SCRIPT, str(saved)], input=json.dumps([texts, *small]),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    out = result["text"][0]
    assert out["word_count"] == [9, 6, 0, 12 * 6]  # the long text (> 22 subwords) is tagged in full
    assert sum(out["entity_count"]) > 0  # a random model still predicts some chunks
    for b, text in enumerate(texts):
        for i in range(out["word_count"][b]):
            assert text[out["word_starts"][b][i]:out["word_ends"][b][i]] == out["word_texts"][b][i]
            assert out["word_tags"][b][i] in LABELS
        for e in range(out["entity_count"][b]):
            assert text[out["entity_starts"][b][e]:out["entity_ends"][b][e]] == out["entity_texts"][b][e]
            assert out["entity_types"][b][e] in ("LOC", "MISC", "ORG", "PER")
    for batch, answer in zip(small, result["text"][1:]):
        assert answer["word_count"] == [len(text.split()) for text in batch]
        assert [row[:1] for row in answer["word_texts"]] == [text.split()[:1] for text in batch]
        assert all(tag in LABELS for row, n in zip(answer["word_tags"], answer["word_count"]) for tag in row[:n])
    assert result["text"][3]["entity_count"] == [0] and result["text"][5]["entity_count"] == [0, 0]
    tokens = result["tokens"]
    assert tokens["mixed"]["word_count"] == [3, 1] and tokens["mixed"]["word_tags"][1][1:] == ["", ""]
    assert tokens["one_word"]["word_count"] == [1, 1] and all(t[0] in LABELS for t in tokens["one_word"]["word_tags"])
    assert tokens["none"]["word_count"] == [0] and tokens["none"]["entity_count"] == [0]

    (row,) = predict(saved, [texts[0]])  # what `tfsft predict` prints: padding cut by the counts
    assert len(row["word_tags"]) == 9 and len(row["entity_texts"]) == row["entity_count"]
    (hello,) = predict(saved, ["Hello"])
    assert hello["word_texts"] == ["Hello"] and hello["word_tags"][0] in LABELS
    (empty,) = predict(saved, [""])
    assert empty["word_count"] == 0 and empty["word_tags"] == [] and empty["entity_count"] == 0


def test_evaluation_tags_batches_of_one_word_sentences(ner_tokenizer):
    """Length-sorted evaluation batches: the first holds only one-word sentences."""
    task = ner_task()
    model = task.build_model(tiny_bert(ner_tokenizer.vocabulary_size()))
    sentences = [["EU", "rejects", "German"], ["Peter"], ["EU"], ["lamb", "."]]
    tags = task.predict_tags(model, task.make_encoder(ner_tokenizer, 24), sentences, batch_size=2)
    assert [len(t) for t in tags] == [3, 1, 1, 2] and all(t in LABELS for s in tags for t in s)


@pytest.mark.slow
@needs_conll
def test_shrunk_end_to_end_on_real_conll_rows(tmp_path):
    from tfsft.export import export
    from tfsft.training import evaluate, train

    data = tmp_path / "data"
    data.mkdir()
    words = set()
    for name, count in (("train.txt", 48), ("valid.txt", 16), ("test.txt", 16)):
        rows = read_conll(CONLL / name, max_examples=count)
        words |= {w.lower() for s in rows.tokens for w in s}
        (data / name).write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(s, g))
                                             for s, g in zip(rows.tokens, rows.tags)) + "\n", encoding="utf-8")
    vocabulary = write_vocabulary(tmp_path / "vocab.txt", sorted(words)[:150])  # the rest split into characters
    config = config_from_mapping({
        "name": "ner_tiny", "run_dir": str(tmp_path / "run"),
        "model": {"backbone": "random", "vocabulary": str(vocabulary), "num_layers": 1, "num_heads": 2,
                  "hidden_dim": 16, "intermediate_dim": 32, "sequence_length": 24},  # long sentences → windows
        "task": {"name": "token_classification", "stride": 8, "casing": True},
        "data": {"files": {k: str(data / f) for k, f in
                           (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt"))}},
        "train": {"max_steps": 4, "batch_size": 8, "eval_every_steps": 2, "verbose": 0, "learning_rate": 1e-3},
    })
    result = train(config, log=lambda _: None)
    for key in ("precision", "recall", "f1", "strict_f1", "token_accuracy"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert set(result.metrics["per_type"]) <= {"LOC", "MISC", "ORG", "PER"}
    assert json.loads((result.run_dir / "metrics.json").read_text())["words"] == result.metrics["words"]
    history = (result.run_dir / "logs" / "history.csv").read_text().splitlines()[0]
    assert "val_entity_f1" in history and "val_accuracy" in history

    test_metrics = evaluate(result.run_dir, "test", log=lambda _: None)
    assert test_metrics["examples"] == 16
    assert (result.run_dir / "eval_test" / "entity_report.txt").read_text().splitlines()[0].split()[0] == "type"
    saved = export(result.run_dir, log=lambda _: None)  # verified in a fresh process
    assert (saved / "saved_model.pb").exists()


# --- plain tags (part of speech): train → evaluate → export → predict --------------

POS_TRAIN = """The/DT film/NN is/VBZ good/JJ ./.
I/PRP did/VBD n't/RB see/VB the/DT story/NN ./.
The/DT story/NN is/VBZ very/RB long/JJ ./.
It/PRP is/VBZ n't/RB bad/JJ ./.
"""
POS_TEST = (  # CoNLL-U: a multiword token line (didn't) and its two words
    "# text = I didn't see it.\n"
    "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n2-3\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tdid\tdo\tAUX\tVBD\t_\t4\taux\t_\t_\n3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
    "4\tsee\tsee\tVERB\tVB\t_\t0\troot\t_\t_\n5\tit\tit\tPRON\tPRP\t_\t4\tobj\t_\t_\n"
    "6\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_\n"
)
POS_TAGS = [".", "DT", "JJ", "NN", "PRP", "RB", "VB", "VBD", "VBZ"]


def test_plain_tags_train_evaluate_and_export_one_tag_per_word(tmp_path, capsys):
    from tfsft.export import export, predict, predict_words
    from tfsft.training import evaluate, train

    (tmp_path / "train.pos").write_text(POS_TRAIN * 4, encoding="utf-8")
    (tmp_path / "test.conllu").write_text(POS_TEST, encoding="utf-8")
    words = {w.split("/")[0].lower() for w in POS_TRAIN.split()} | {"it"}
    vocabulary = write_vocabulary(tmp_path / "vocab.txt", sorted(words))
    config = config_from_mapping({
        "name": "pos", "run_dir": str(tmp_path / "run"),
        "model": {"backbone": "random", "vocabulary": str(vocabulary), "num_layers": 1, "num_heads": 2,
                  "hidden_dim": 16, "intermediate_dim": 32, "sequence_length": 24},
        "task": {"name": "token_classification", "word_splitter": "penn_treebank"},  # tags detected as plain
        "data": {"files": {"train": str(tmp_path / "train.pos"), "validation": str(tmp_path / "train.pos"),
                           "test": str(tmp_path / "test.conllu")}, "tags_column": "xpos"},
        "train": {"max_steps": 24, "batch_size": 4, "eval_every_steps": 24, "verbose": 0, "learning_rate": 3e-3,
                  "precision": "float32"},
    })
    result = train(config, log=lambda _: None)
    run = result.run_dir
    assert json.loads((run / "task.json").read_text()) == {"labels": POS_TAGS, "scheme": "none"}
    history = (run / "logs" / "history.csv").read_text().splitlines()[0]
    assert "val_accuracy" in history and "entity_f1" not in history
    for metrics in (result.metrics, result.test_metrics):
        assert {"token_accuracy", "macro_f1", "per_tag"} <= metrics.keys() and "f1" not in metrics
        assert 0.0 <= metrics["token_accuracy"] <= 1.0
    assert result.metrics["words"] == 4 * len(POS_TRAIN.split()) and result.test_metrics["words"] == 6
    assert result.metrics["token_accuracy"] > 0.5, result.metrics  # 24 steps of 4 sentences teach it the tags
    assert set(result.test_metrics["per_tag"]) == {"PRP", "VBD", "RB", "VB", "."}
    assert (run / "eval_test" / "tag_report.txt").read_text().startswith("tag ")
    assert evaluate(run, "test", log=lambda _: None)["words"] == 6

    saved = export(run, log=lambda _: None)  # verified in a fresh process (TF + TF Text only)
    (row,) = predict(saved, ["I didn't see the film."])
    assert row["word_texts"] == ["I", "did", "n't", "see", "the", "film", "."]  # Penn Treebank splitting
    assert len(row["word_tags"]) == 7 and set(row["word_tags"]) <= set(POS_TAGS)
    assert not any(key.startswith("entity_") for key in row)
    (pre_split,) = predict_words(saved, [["It", "is", "n't", "bad"]])
    assert pre_split["words"] == ["It", "is", "n't", "bad"] and len(pre_split["word_tags"]) == 4

    from tfsft.cli import main

    assert main(["predict", str(saved), "--words", "--text", "did n't go"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["words"] == ["did", "n't", "go"] and line["word_count"] == 3 and len(line["word_tags"]) == 3


def test_plain_tag_options_are_checked_as_plain_tags():
    config = config_from_mapping({"task": {"name": "token_classification", "labels": ["NN", "VB"]},
                                  "data": {"files": {"train": "t.pos"}}})
    assert config.task.plain_labels() is True
    with pytest.raises(ConfigError, match=r"task.labels: needs at least 2 tags"):
        config_from_mapping({"task": {"name": "token_classification", "scheme": "none", "labels": ["NN"]},
                             "data": {"files": {"train": "t.pos"}}})


def test_shipped_pos_config_loads():
    config = load_config(REPO / "configs" / "pos_minilm.yaml")
    assert config.task.scheme == "none" and config.task.word_splitter == "penn_treebank"
    assert config.data.files == {"train": "train.pos", "validation": "dev.pos"}
