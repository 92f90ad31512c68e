"""Question answering: readers and their errors, windows and offsets, n-best spans, SQuAD metrics, a tiny run."""

import json
import os
import re
from pathlib import Path

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import no_convert_scope

from tests.conftest import tiny_model, tiny_train, write_vocab
from tfsft.config import ConfigError, DataConfig
from tfsft.data import readers
from tfsft.data.readers import DataError
from tfsft.experiment import config_from_mapping, load_config
from tfsft.tasks.question_answering import QuestionAnsweringOptions, QuestionAnsweringTask
from tfsft.tasks.question_answering.data import read_qa_jsonl, read_qa_split, read_qa_tfds, read_squad_json
from tfsft.tasks.question_answering.metrics import normalize_answer, squad_metrics, squad_scores, token_f1
from tfsft.tasks.question_answering.postprocess import answer_outputs, best_spans
from tfsft.tasks.question_answering.windows import QuestionContextEncoder

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TFSFT_DATA_DIR", REPO / ".." / "shared" / "data"))
SQUAD_DEV = DATA_DIR / "squad" / "dev-v1.1.json"
needs_squad = pytest.mark.skipif(not SQUAD_DEV.exists(), reason=f"the SQuAD dev set is not at {SQUAD_DEV}")

CONTEXT = "the film is good and the story is great . it is not dull"


def qa(qid, question, answers, impossible=None):
    record = {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
    if impossible is not None:
        record["is_impossible"] = impossible
    return record


def squad_file(path: Path, articles) -> Path:
    """SQuAD JSON from [(title, [(context, [qa, ...]), ...]), ...]."""
    data = [{"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs]}
            for title, paragraphs in articles]
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def synthetic_squad(path: Path, articles: int = 6) -> Path:
    """Articles of one paragraph each (contexts differ by trailing spaces), three questions each."""
    questions = [("is the film good ?", "good"), ("what is great ?", "the story"), ("is it dull ?", "not dull")]
    return squad_file(path, [(f"t{a}", [(CONTEXT + " " * a, [qa(f"q{a}-{i}", q, [(t, CONTEXT.index(t))])
                                                             for i, (q, t) in enumerate(questions)])])
                             for a in range(articles)])


@pytest.fixture
def tokenizer(tmp_path):
    return keras_hub.models.BertTokenizer(vocabulary=str(write_vocab(tmp_path / "vocab.txt")), lowercase=True)


# --- reading and bad input ----------------------------------------------------


def test_squad_json_reads_the_chosen_articles_in_order(tmp_path):
    path = synthetic_squad(tmp_path / "squad.json", articles=6)
    examples = read_squad_json(path, articles="5-6")
    assert examples.ids == ["q4-0", "q4-1", "q4-2", "q5-0", "q5-1", "q5-2"]
    assert examples.answers[1][0].text == "the story" and examples.answers[1][0].aligned
    assert examples.where(3) == f"{path}: question q5-0 (article 6 't5', paragraph 1)"
    assert len(read_squad_json(path)) == 18
    with pytest.raises(DataError, match=r"asks for articles 5-7; the file has 6"):
        read_squad_json(path, articles="5-7")


def test_answer_not_at_its_start_is_an_error_naming_file_question_and_count(tmp_path):
    path = squad_file(tmp_path / "bad.json", [("a", [(CONTEXT, [
        qa("ok", "q", [("good", 12)]),
        qa("off-by-one", "q", [("good", 13)]),
        qa("absent", "q", [("movie", 0)]),
    ])])])
    with pytest.raises(DataError) as error:
        read_squad_json(path)
    message = str(error.value)
    assert message.startswith(f"{path}: 2 answer(s) are not at their answer_start")
    assert "question off-by-one (article 1 'a', paragraph 1): answer 1 'good' is not at answer_start 13" in message
    assert "the text occurs at 12" in message and "question absent" in message and "not in the context" in message
    assert "task.misaligned_answers: skip" in message


def test_skipping_misaligned_answers_warns_and_keeps_them_as_gold_texts(tmp_path):
    path = squad_file(tmp_path / "bad.json", [("a", [(CONTEXT, [
        qa("second-ok", "q", [("good", 13), ("good", 12)]),
        qa("none-ok", "q", [("dull", 3)]),
    ])])])
    with pytest.warns(UserWarning, match=r"2 answer\(s\) not at their answer_start are left out"):
        examples = read_squad_json(path, misaligned="skip")
    assert len(examples.misaligned) == 2
    assert examples.span_answer(0) == ("good", 12, True)  # the first answer found in the context
    assert examples.span_answer(1) is None and [a.text for a in examples.answers[1]] == ["dull"]


def test_v1_question_without_answers_and_v2_impossible_questions(tmp_path):
    questions = [qa("fine", "q", [("good", 12)]), qa("empty", "q", [])]
    path = squad_file(tmp_path / "v1.json", [("a", [(CONTEXT, questions)])])
    with pytest.raises(DataError, match=r"v1.json: question empty \(article 1 'a', paragraph 1\): no answers; "
                                        r"SQuAD v1 questions need at least one"):
        read_squad_json(path)
    v2 = squad_file(tmp_path / "v2.json", [("a", [(CONTEXT, [qa("yes", "q", [("good", 12)], False),
                                                             qa("no", "q", [], True)])])])
    with pytest.raises(DataError, match=r"question no .*marked is_impossible .*task.null_answers: true"):
        read_squad_json(v2)
    examples = read_squad_json(v2, null_answers=True)
    assert examples.answers[1] == [] and examples.span_answer(1) is None


def test_bad_records_name_the_question(tmp_path):
    duplicate = squad_file(tmp_path / "dup.json", [("a", [(CONTEXT, [qa("x", "q", [("good", 12)])] * 2)])])
    with pytest.raises(DataError, match=r"question x .*used by an earlier question"):
        read_squad_json(duplicate)
    start = squad_file(tmp_path / "start.json", [("a", [(CONTEXT, [qa("x", "q", [("good", 999)])])])])
    with pytest.raises(DataError, match=r"question x .*answer 1 has answer_start 999; expected an integer"):
        read_squad_json(start)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"list.json: expected SQuAD JSON"):
        read_squad_json(tmp_path / "list.json")


def test_jsonl_takes_both_answer_layouts(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "question": "q", "context": CONTEXT, "answers": [{"text": "good", "answer_start": 12}]},
        {"question": "q", "context": CONTEXT, "answers": {"text": ["dull", "not dull"], "answer_start": [52, 48]}},
    ]) + "\n", encoding="utf-8")
    examples = read_qa_jsonl(path)
    assert examples.ids == ["a", "line 2"]
    assert [a.text for a in examples.answers[1]] == ["dull", "not dull"] and all(a.aligned for a in examples.answers[1])
    path.write_text(json.dumps({"question": "q", "answers": []}) + "\n")
    with pytest.raises(DataError, match=r"qa.jsonl:1: missing key 'context'"):
        read_qa_jsonl(path)


def test_tfds_squad_with_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(readers, "_resolves", lambda host: True)  # mocked datasets are never "prepared"

    def as_dataset(self, split, **kwargs):  # two records in the builder's feature layout
        return tf.data.Dataset.from_tensor_slices({
            "id": ["q1", "q2"], "title": ["t", "t"], "context": [CONTEXT, CONTEXT], "question": ["a?", "b?"],
            "answers": {"text": tf.ragged.constant([["good"], ["the story", "story"]]),
                        "answer_start": tf.ragged.constant([[12], [21, 25]], tf.int32)},
        })

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        examples = read_qa_tfds("squad/v1.1", "validation")
        official = load_config(REPO / "configs" / "squad_tfds_minilm.yaml")
        train = QuestionAnsweringTask(official.task, official.data).read("train")
    assert train.source == "tfds:squad/v1.1[train]" and len(train) == 2
    assert examples.source == "tfds:squad/v1.1[validation]" and examples.ids == ["q1", "q2"]
    assert [a.text for a in examples.answers[1]] == ["the story", "story"]
    assert examples.where(1) == "tfds:squad/v1.1[validation]: question q2 (record 2)"


def test_options_are_validated_with_dotted_paths(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"task": {"name": "question_answering", "doc_stride": 0, "articles": {"train": "9-2"}},
                             "data": {"files": {"train": "x.json"}}})
    problems = dict(error.value.problems)
    assert problems["task.doc_stride"] == "must be ≥ 1. Received: 0"
    assert "1 ≤ first ≤ last" in problems["task.articles.train"]
    data = DataConfig(files={"train": str(tmp_path / "x.jsonl")})
    with pytest.raises(DataError, match=r"task.articles.train selects articles of SQuAD JSON \(.json\) files only"):
        read_qa_split(data, "train", QuestionAnsweringOptions(articles={"train": "1-2"}))


@needs_squad
def test_the_shipped_article_split_of_the_real_dev_set():
    config = load_config(REPO / "configs" / "squad_minilm.yaml", overrides=[f"data.data_dir={DATA_DIR}"])
    task = QuestionAnsweringTask(config.task, config.data)
    train, validation = task.read("train"), task.read("validation")
    assert (len(train), len(validation)) == (8_582, 1_988) and not train.misaligned
    assert not set(train.contexts) & set(validation.contexts)  # no context shared
    assert sum(len(a) for a in validation.answers) >= len(validation)


# --- SQuAD metrics ------------------------------------------------------------


def test_official_normalization_em_and_f1():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert squad_scores("Denver Broncos", ["the Denver Broncos.", "Broncos"]) == (1.0, 1.0)
    assert token_f1("Denver Broncos won", "the Denver Broncos") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad_scores("Carolina", ["Denver Broncos"]) == (0.0, 0.0)
    metrics = squad_metrics(["Denver Broncos", "Carolina Panthers"], [["Denver Broncos"], ["Panthers", "Carolina"]])
    assert metrics == {"examples": 2, "exact_match": 0.5, "f1": pytest.approx((1 + 2 / 3) / 2)}


def test_unanswerable_questions_score_the_empty_answer():
    metrics = squad_metrics(["", "x", "Denver"], [[], [], ["Denver"]])
    assert metrics["exact_match"] == pytest.approx(2 / 3) and metrics["no_answer_exact_match"] == 0.5
    assert metrics["has_answer_examples"] == 1 and metrics["has_answer_f1"] == 1.0


# --- windows and offsets ------------------------------------------------------


def test_subword_offsets_point_into_the_context(tokenizer):
    encoder = QuestionContextEncoder(tokenizer, 48, doc_stride=8, max_question_length=8)
    contexts = ["The film, Zürich's best: good!", "a fun flick", "\ufb01lms"]  # ﬁ: a ligature, folded to "fi"
    ids, starts, ends = encoder.tokenize(tf.constant(contexts))
    tokenizer._allow_python_workflow = False
    with no_convert_scope():
        assert ids.to_list() == tokenizer(tf.constant(contexts)).to_list()  # the ids KerasHub gives
    pieces = [[c.encode()[s:e].decode() for s, e in zip(row_s, row_e)]
              for c, row_s, row_e in zip(contexts, starts.to_list(), ends.to_list())]
    assert pieces[0] == ["The", "film", ",", "Zürich", "'", "s", "best", ":", "good", "!"]  # [UNK]: the whole word
    assert pieces[1] == ["a", "fun", "f", "l", "i", "c", "k"]  # "flick" is not in the vocabulary: letters
    assert pieces[2] == ["\ufb01lms", "\ufb01lms"]  # film ##s; folding changed the length: the whole word each


def test_windows_cover_every_subword_and_each_has_one_owner(tokenizer):
    encoder = QuestionContextEncoder(tokenizer, 16, doc_stride=3, max_question_length=4)
    start = CONTEXT.index("great")  # CONTEXT: 14 words, 14 subwords
    word_starts = [m.start() for m in re.finditer(r"\S+", CONTEXT)]
    out = encoder(tf.constant(["is it good ?", "x"]), tf.constant([CONTEXT, "ok"]),
                  tf.constant([[start, start + 5], [-1, -1]], tf.int64))
    rows = out["window_row"].numpy().tolist()
    budget = 16 - 3 - 4
    assert rows == [0] * (int(np.ceil((14 - budget) / 3)) + 1) + [1]  # n = ⌈(T - W) / s⌉ + 1
    token_start, owner = out["token_start"].numpy(), out["token_owner"].numpy()
    first_question = token_start[:rows.count(0)]
    assert set(first_question[first_question >= 0].tolist()) == set(word_starts)
    owned = token_start[:rows.count(0)][owner[:rows.count(0)]]
    assert sorted(owned.tolist()) == word_starts  # every subword owned by exactly one window
    ids = out["token_ids"].numpy()
    positions = out["answer_positions"].numpy()  # windows [0, 9), [3, 12), [5, 14) all hold "great" (subword 8)
    assert positions.tolist() == [[6 + 8] * 2, [6 + 5] * 2, [6 + 3] * 2, [0, 0]]  # after [CLS] q(4) [SEP]
    assert [token_start[w, p] for w, (p, _) in enumerate(positions[:3])] == [start] * 3
    assert ids[0, 0] == tokenizer.cls_token_id and ids[0, 5] == tokenizer.sep_token_id  # [CLS] q(4) [SEP]
    assert out["segment_ids"].numpy()[0, 5:7].tolist() == [0, 1]
    assert out["answer_found"].numpy().tolist() == [True, False]


def test_an_answer_covering_no_subword_is_an_error(tokenizer, tmp_path):
    context = "good \u200b film"
    path = squad_file(tmp_path / "zw.json", [("a", [(context, [qa("zero-width", "q", [("\u200b", 5)])])])])
    task = QuestionAnsweringTask(QuestionAnsweringOptions(max_question_length=4),
                                 DataConfig(files={"train": str(path)}))
    with pytest.raises(DataError, match=r"(?s)1 answer\(s\) cover no subword .*question zero-width"):
        task.encode(task.read("train"), task.make_encoder(tokenizer, 16), training=True)


# --- n-best spans -------------------------------------------------------------


def span_logits(encoded, starts: dict, ends: dict) -> tf.Tensor:
    """(NW, L, 2) logits: `starts` / `ends` map a context byte offset to the logit of the subword there."""
    offsets = encoded["token_start"].numpy()
    logits = np.zeros(offsets.shape + (2,), np.float32)
    for column, table in ((0, starts), (1, ends)):
        for offset, value in table.items():
            logits[offsets == offset, column] = value
    return tf.constant(logits)


def test_best_spans_follow_scores_lengths_and_ownership(tokenizer):
    great, dull = CONTEXT.index("great"), CONTEXT.index("dull")
    question, context = tf.constant(["is it good ?"]), tf.constant([CONTEXT])
    wide = QuestionContextEncoder(tokenizer, 24, doc_stride=3, max_question_length=4)(question, context)  # 1 window
    logits = span_logits(wide, {great: 5.0}, {dull: 6.0, great: 2.0})
    out = answer_outputs(context, best_spans(logits, wide, 1, n_best=3, max_answer_length=8), False, 0.0)
    assert out["answer"].numpy()[0].decode() == "great . it is not dull"
    assert (int(out["answer_start"][0]), int(out["answer_end"][0])) == (great, len(CONTEXT))
    assert out["score"].numpy()[0] == pytest.approx(11.0)
    assert int(out["candidate_count"][0]) == 3 and out["candidate_texts"].numpy()[0, 1] == b"great"
    assert out["candidate_scores"].numpy()[0, :2].tolist() == [11.0, 7.0]

    short = answer_outputs(context, best_spans(logits, wide, 1, n_best=3, max_answer_length=2), False, 0.0)
    assert short["answer"].numpy()[0] == b"great"  # "great … dull" is 6 subwords, longer than 2

    null = answer_outputs(context, best_spans(logits, wide, 1, 3, 8), null_answers=True, null_threshold=-12.0)
    assert null["answer"].numpy()[0] == b"" and int(null["answer_start"][0]) == -1  # null 0 − best 11 > −12
    assert null["score"].numpy()[0] == 0.0

    # Windows [0, 9), [3, 12), [5, 14): "great" (subword 8) is owned by the middle window, which lacks
    # "dull" (13), so the span great … dull is never proposed (BERT's max-context rule).
    narrow = QuestionContextEncoder(tokenizer, 16, doc_stride=3, max_question_length=4)(question, context)
    assert narrow["window_row"].numpy().tolist() == [0, 0, 0]
    logits = span_logits(narrow, {great: 5.0}, {dull: 6.0, great: 2.0})
    out = answer_outputs(context, best_spans(logits, narrow, 1, n_best=3, max_answer_length=8), False, 0.0)
    assert out["answer"].numpy()[0] == b"great" and out["score"].numpy()[0] == pytest.approx(7.0)


def test_character_offsets_count_code_points(tokenizer):
    text = "Zürich: the story"
    context = tf.constant([text])
    encoded = QuestionContextEncoder(tokenizer, 24, doc_stride=8, max_question_length=4)(tf.constant(["x"]), context)
    logits = span_logits(encoded, {len("Zürich: ".encode()): 9.0}, {len("Zürich: the ".encode()): 9.0})
    out = answer_outputs(context, best_spans(logits, encoded, 1, 2, 4), False, 0.0)
    start, end = int(out["answer_start"][0]), int(out["answer_end"][0])
    assert (start, end) == (8, 17) and text[start:end] == out["answer"].numpy()[0].decode() == "the story"


# --- a tiny run: train → evaluate → export (fresh process) → tfsft predict ------------


def test_tiny_run_trains_evaluates_exports_and_predicts(tmp_path, capsys):
    from tfsft import cli
    from tfsft.export import export
    from tfsft.training import evaluate, train

    squad = synthetic_squad(tmp_path / "squad.json")
    model = {**tiny_model(write_vocab(tmp_path / "vocab.txt")), "sequence_length": 16}  # long contexts → windows
    config = config_from_mapping({
        "name": "qa_tiny", "run_dir": str(tmp_path / "run"), "model": model,
        "task": {"name": "question_answering", "doc_stride": 4, "max_question_length": 6,
                 "articles": {"train": "1-4", "validation": "5-6"}},
        "data": {"files": {"train": str(squad), "validation": str(squad)}},
        "train": tiny_train(max_steps=4, eval_every_steps=2),
    })
    result = train(config, log=lambda _: None)
    assert result.metrics["examples"] == 6 and result.metrics["windows"] > 6
    assert 0.0 <= result.metrics["exact_match"] <= result.metrics["f1"] <= 1.0
    predictions = json.loads((result.run_dir / "predictions.json").read_text())
    assert sorted(predictions) == [f"q{a}-{i}" for a in (4, 5) for i in range(3)]
    assert all(p in CONTEXT for p in predictions.values())
    assert "val_span_accuracy" in (result.run_dir / "logs" / "history.csv").read_text().splitlines()[0]
    again = evaluate(result.run_dir, "validation", log=lambda _: None)  # the run reloaded: the same answers
    assert again["f1"] == pytest.approx(result.metrics["f1"])
    assert json.loads((result.run_dir / "eval_validation" / "predictions.json").read_text()) == predictions

    saved = export(result.run_dir, log=lambda _: None)  # verified in a fresh TF + TF Text process
    assert cli.main(["predict", str(saved), "--question", "what is great ?", "--context", CONTEXT]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["question"] == "what is great ?" and row["context"] == CONTEXT
    assert CONTEXT[row["answer_start"]:row["answer_end"]] == row["answer"] != ""
    assert len(row["candidate_texts"]) == row["candidate_count"] <= 20


@pytest.mark.slow
@needs_squad
def test_the_shipped_config_runs_shrunk_with_minilm(tmp_path):
    """configs/squad_minilm.yaml with the real MiniLM on 64 questions per split, 4 steps; export verified."""
    from tfsft.export import export
    from tfsft.training import train

    config = load_config(REPO / "configs" / "squad_minilm.yaml", overrides=[
        f"data.data_dir={DATA_DIR}", f"run_dir={tmp_path / 'run'}", "data.max_examples=64", "train.max_steps=4",
        "train.eval_every_steps=4", "train.verbose=0"])
    result = train(config, log=lambda _: None)
    assert result.metrics["examples"] == 64 and 0.0 <= result.metrics["f1"] <= 1.0
    saved = export(result.run_dir, log=lambda _: None)
    assert (saved / "saved_model.pb").exists()
