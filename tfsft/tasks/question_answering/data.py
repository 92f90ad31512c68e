"""Reading extractive-QA data: SQuAD v1.1 / v2.0 JSON, JSON lines and TFDS `squad`.

Each question becomes one example with its context and gold answers (text and
character offset `answer_start`). Every answer is checked against its context:
`context[answer_start:answer_start + len(text)] == text`. An answer that is
not there is an error naming the file and question id (all of them are counted),
or, with `task.misaligned_answers: skip`, is left out of the training spans
(counted and reported with a warning) while it still counts as a gold answer
for EM/F1, which compare texts only. A question without answers is an error
unless `task.null_answers` (SQuAD v2) is set.

Sources, by `data.files.<split>` suffix, else `data.tfds`:

* `.json`: SQuAD JSON, `data` → articles (`title`, `paragraphs`) → `context`
  and `qas` (`id`, `question`, `answers` [`text`, `answer_start`], v2:
  `is_impossible`); `task.articles` picks articles by 1-based number;
* `.jsonl`: one object per line with `question`, `context`, `answers` (a list
  of `{text, answer_start}` or `{text: [...], answer_start: [...]}`) and
  optionally `id` (default: `line <n>`) and `is_impossible`;
* TFDS `squad/v1.1`, `squad/v2.0` (features `id`, `question`, `context`,
  `answers`, v2: `is_impossible`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

from tfsft.data.readers import DataError, decoded_lines, json_records, load_tfds_split

SHOWN = 5  # misaligned answers quoted in a message


class Answer(NamedTuple):
    text: str
    start: int  # character offset in the context
    aligned: bool  # context[start:start + len(text)] == text


@dataclass
class QAExamples:
    """Questions, contexts and gold answers of one split.

    Attributes:
        ids, questions, contexts: one entry per question.
        answers: the gold answers of each question ([] = no answer, SQuAD v2).
        locations: where each question sits in the source ("article 3
            'Normans', paragraph 2", "line 7", "record 5").
        source: the file path or `tfds:<name>[<split>]`.
        misaligned: one message per answer not found at its `answer_start`
            (only non-empty with `misaligned_answers: skip`).
    """

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[list[Answer]]
    locations: list[str]
    source: str
    misaligned: list[str] = field(default_factory=list)
    skipped_empty: int = 0  # read by the training loop; QA data never skips rows

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, index: int) -> str:
        """`<source>: question <id> (<location>)`, for messages."""
        return f"{self.source}: question {self.ids[index]} ({self.locations[index]})"

    def span_answer(self, index: int) -> Optional[Answer]:
        """The answer trained on: the first one found in the context (None: no answer)."""
        return next((a for a in self.answers[index] if a.aligned), None)


class _Collector:
    """Checks and accumulates questions; `result()` applies the misaligned-answer policy."""

    def __init__(self, source: str, null_answers: bool, misaligned: str, max_examples: Optional[int]):
        self.source, self.null_answers, self.policy, self.max_examples = source, null_answers, misaligned, max_examples
        self.examples = QAExamples([], [], [], [], [], source)
        self.seen: set[str] = set()

    def full(self) -> bool:
        return self.max_examples is not None and len(self.examples) >= self.max_examples

    def add(self, qid, question, context, answers: list[tuple], where: str, impossible: bool = False) -> None:
        """Adds one question; `answers` holds raw (text, answer_start) pairs."""
        name = f"{self.source}: question {qid} ({where})"
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{name}: empty or missing question text")
        if not isinstance(context, str) or not context.strip():
            raise DataError(f"{name}: empty or missing context")
        if qid in self.seen:
            raise DataError(f"{name}: the id {qid!r} is used by an earlier question; ids must be unique")
        if impossible and not self.null_answers:
            raise DataError(f"{name}: marked is_impossible (SQuAD v2 data); set task.null_answers: true to train "
                            "and evaluate with unanswerable questions")
        if not answers and not impossible and not self.null_answers:
            raise DataError(f"{name}: no answers; SQuAD v1 questions need at least one "
                            "(set task.null_answers: true for SQuAD v2 data with unanswerable questions)")
        checked = [] if impossible else [self._answer(name, k, text, start, context)
                                         for k, (text, start) in enumerate(answers, start=1)]
        self.seen.add(qid)
        for column, value in zip(("ids", "questions", "contexts", "answers", "locations"),
                                 (qid, question, context, checked, where)):
            getattr(self.examples, column).append(value)

    def _answer(self, name: str, k: int, text, start, context: str) -> Answer:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name}: answer {k} has no text")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(context):
            raise DataError(f"{name}: answer {k} has answer_start {start!r}; expected an integer character "
                            f"offset in [0, {len(context)}]")
        aligned = context[start:start + len(text)] == text
        if not aligned:
            found = context.find(text)
            hint = f"; the text occurs at {found}" if found >= 0 else "; the text is not in the context"
            self.examples.misaligned.append(f"{name}: answer {k} {text!r} is not at answer_start {start} (the "
                                            f"context has {context[start:start + len(text)]!r} there{hint})")
        return Answer(text, start, aligned)

    def result(self) -> QAExamples:
        examples = self.examples
        if not examples.ids:
            raise DataError(f"{self.source}: no questions")
        bad = examples.misaligned
        if bad:
            listing = "\n  ".join(bad[:SHOWN]) + (f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
            if self.policy == "error":
                raise DataError(f"{self.source}: {len(bad)} answer(s) are not at their answer_start:\n  {listing}\n"
                                "Fix the offsets, or set task.misaligned_answers: skip to leave these answers out "
                                "of the training spans (they still count as gold answers for EM/F1).")
            warnings.warn(f"{self.source}: {len(bad)} answer(s) not at their answer_start are left out of the "
                          f"training spans:\n  {listing}", stacklevel=3)
        return examples


def article_range(spec: str) -> tuple[int, int]:
    """`"1-38"` → (1, 38); `"5"` → (5, 5): 1-based, inclusive. Raises ValueError."""
    first, _, last = str(spec).partition("-")
    low, high = int(first), int(last or first)
    if not 1 <= low <= high:
        raise ValueError(f"expected 'first-last' with 1 ≤ first ≤ last. Received: {spec!r}")
    return low, high


def read_squad_json(path, *, null_answers=False, misaligned="error", articles: Optional[str] = None,
                    max_examples=None) -> QAExamples:
    """Reads a SQuAD v1.1 / v2.0 JSON file (optionally only articles `articles`, e.g. "1-38")."""
    path = Path(path)
    text = "".join(line for _, line in decoded_lines(path))
    try:
        data = json.loads(text)["data"]
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except (KeyError, TypeError):
        raise DataError(f"{path}: expected SQuAD JSON, an object with a 'data' list of articles") from None
    low, high = article_range(articles) if articles else (1, len(data))
    if high > len(data):
        raise DataError(f"{path}: task.articles asks for articles {low}-{high}; the file has {len(data)}")
    collector = _Collector(str(path), null_answers, misaligned, max_examples)
    for number in range(low, high + 1):
        article = data[number - 1]
        title = article.get("title", "")
        for p, paragraph in enumerate(article.get("paragraphs", []), start=1):
            for qa in paragraph.get("qas", []):
                if collector.full():
                    return collector.result()
                where = f"article {number} {title!r}, paragraph {p}"
                answers = [(a.get("text"), a.get("answer_start")) for a in qa.get("answers", [])]
                collector.add(qa.get("id"), qa.get("question"), paragraph.get("context"), answers, where,
                              bool(qa.get("is_impossible", False)))
    return collector.result()


def _jsonl_answers(raw, name: str) -> list[tuple]:
    """(text, answer_start) pairs from a list of objects or an object of two lists."""
    if isinstance(raw, dict) and isinstance(raw.get("text"), list) and isinstance(raw.get("answer_start"), list):
        if len(raw["text"]) != len(raw["answer_start"]):
            raise DataError(f"{name}: answers has {len(raw['text'])} texts and {len(raw['answer_start'])} starts")
        return list(zip(raw["text"], raw["answer_start"]))
    if isinstance(raw, list) and all(isinstance(a, dict) for a in raw):
        return [(a.get("text"), a.get("answer_start")) for a in raw]
    raise DataError(f"{name}: answers must be a list of {{text, answer_start}} objects or "
                    f"{{text: [...], answer_start: [...]}}. Received: {raw!r}")


def read_qa_jsonl(path, *, null_answers=False, misaligned="error", max_examples=None) -> QAExamples:
    """Reads JSON lines with `question`, `context`, `answers` (and optional `id`, `is_impossible`)."""
    path = Path(path)
    collector = _Collector(str(path), null_answers, misaligned, max_examples)
    for line, record in json_records(path):
        if collector.full():
            break
        for key in ("question", "context", "answers"):
            if key not in record:
                raise DataError(f"{path}:{line}: missing key {key!r}; the object has {', '.join(record)}")
        qid = str(record.get("id", f"line {line}"))
        where = f"line {line}"
        answers = _jsonl_answers(record["answers"], f"{path}: question {qid} ({where})")
        collector.add(qid, record["question"], record["context"], answers, where,
                      bool(record.get("is_impossible", False)))
    return collector.result()


def read_qa_tfds(name: str, split: str, *, data_dir=None, null_answers=False, misaligned="error",
                 max_examples=None) -> QAExamples:
    """Reads TFDS `squad/v1.1` or `squad/v2.0` (or any dataset with the same features)."""
    records, features = load_tfds_split(name, split, data_dir, ["id", "question", "context", "answers"],
                                        local_files="SQuAD JSON files (data.files)")
    has_impossible = "is_impossible" in features
    collector = _Collector(f"tfds:{name}[{split}]", null_answers, misaligned, max_examples)

    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    for number, record in enumerate(records, start=1):
        if collector.full():
            break
        answers = [(text(t), int(s)) for t, s in zip(record["answers"]["text"], record["answers"]["answer_start"])]
        collector.add(text(record["id"]), text(record["question"]), text(record["context"]), answers,
                      f"record {number}", bool(record["is_impossible"]) if has_impossible else False)
    return collector.result()


def read_qa_split(data, split: str, options) -> QAExamples:
    """Reads split `split` of a `DataConfig` with the task's `options` (files by suffix, else TFDS)."""
    common = dict(null_answers=options.null_answers, misaligned=options.misaligned_answers,
                  max_examples=data.max_examples)
    articles = (options.articles or {}).get(split)
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        path = data.file_path(split)
        suffix = path.suffix.lower()
        if suffix == ".json":
            return read_squad_json(path, articles=articles, **common)
        if articles:
            raise DataError(f"{path}: task.articles.{split} selects articles of SQuAD JSON (.json) files only")
        if suffix == ".jsonl":
            return read_qa_jsonl(path, **common)
        raise DataError(f"{path}: expected SQuAD JSON (.json) or JSON lines (.jsonl) for question answering")
    tfds_split = getattr(data.tfds, split, None) if data.tfds else None
    if not tfds_split:
        raise DataError(f"no data.tfds.{split} split in the config")
    if articles:
        raise DataError(f"task.articles.{split} selects articles of SQuAD JSON files; for TFDS slice the split "
                        "(data.tfds.train: 'train[:10%]')")
    return read_qa_tfds(data.tfds.name, tfds_split, data_dir=data.tfds.data_dir, **common)
