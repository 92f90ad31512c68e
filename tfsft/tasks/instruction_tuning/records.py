"""Readers: instruction data files → conversations (prompt turns and responses).

Files (`data.files.<split>`, by suffix or `data.format`):

* `.json`: a JSON list of objects (`code_alpaca_2k.json`) or JSON lines;
* `.jsonl`: one object per line;
* `.tsv` / `.csv`: a header row names the columns.

The format of each file is told from the keys of its first record (key names
are the task's `*_column` options):

* prompt/completion: `{"prompt": ..., "completion": ...}`;
* Alpaca: `{"instruction", "input" (optional), "output" | "response"}`, or the
  Alpaca seed tasks' `{"instruction", "instances": [{"input", "output"}, ...]}`
  (one example per instance);
* chat: `{"messages": [{"role": "system"|"user"|"assistant", "content"}, ...]}`:
  an optional system message, then user/assistant turns ending with the
  assistant; every assistant turn is a response;
* with `task.prompt_template` + `task.completion_template`, every record (or
  table row) is formatted into a prompt/completion pair instead, e.g. SST-2's
  `{sentence}` and `{label_name}` (from `task.label_names[row[data.label_column]]`).

A path may end with a slice over the file's examples, as for corpora
(`code_alpaca_2k.json[:-200]`, `[-200:]`, `[:90%]`); then an empty prompt or
response is an error, or with `data.skip_empty` is left out and counted in
`skipped_empty`; then `data.max_examples` keeps the first n. Errors
(`DataError`) name the file and line (JSON lines, tables) or record (JSON
lists) and what was expected.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tfsft.data.readers import DataError, decoded_lines, json_records, slice_range, split_slice
from tfsft.tasks.instruction_tuning.options import LABEL_NAME, InstructionTuningOptions, template_fields

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's `prompt` (Alpaca: the instruction), its optional
    `context` (Alpaca's `input`) and the `response` the model learns."""

    prompt: str
    response: str
    context: str = ""

    @property
    def message(self) -> str:
        """The user's message: the prompt, then the context after a blank line."""
        return f"{self.prompt}\n\n{self.context}" if self.context else self.prompt


@dataclass(frozen=True)
class Conversation:
    """Turns in order; `system` is the example's own system message (None = the task's)."""

    turns: tuple[Turn, ...]
    system: Optional[str] = None


@dataclass
class InstructionExamples:
    """Conversations read from one split; `lines[i]` is the line or record of example i."""

    conversations: list[Conversation]
    lines: list[int]
    source: str
    unit: str = "line"  # "line" (JSON lines, tables) or "record" (JSON lists)
    skipped_empty: int = 0
    formats: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.conversations)

    def where(self, index: int) -> str:
        """`file:line` or `file record n` of example `index`, for error messages."""
        number = self.lines[index]
        return f"{self.source}:{number}" if self.unit == "line" else f"{self.source} record {number}"


# ----------------------------------------------------------------------------
# Records of a file: (number, dict), numbered by line or by record
# ----------------------------------------------------------------------------


def json_list_records(path: Path) -> Iterator[tuple[int, dict]]:
    """`(record number, object)` of a JSON list file; 1-based."""
    text = "".join(line for _, line in decoded_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or JSON lines), got {type(data).__name__}")
    for number, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{path} record {number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def table_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    """`(line, {column: value})` of a TSV/CSV file with a header row; blank lines skipped."""
    reader = csv.reader((text for _, text in decoded_lines(path)), delimiter=delimiter, quotechar='"')
    columns = next(reader, None)
    if columns is None:
        raise DataError(f"{path}: the file is empty")
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(columns):
            raise DataError(f"{path}:{reader.line_num}: {len(row)} field(s), "
                            f"expected {len(columns)} ({', '.join(columns)})")
        yield reader.line_num, dict(zip(columns, row))


def file_records(path: Path, fmt: Optional[str]) -> tuple[Iterator[tuple[int, dict]], str]:
    """The records of `path` and their unit ("line" or "record"), by `fmt` or the suffix."""
    fmt = fmt or {".json": "json", ".jsonl": "jsonl", ".tsv": "tsv", ".csv": "csv"}.get(path.suffix.lower())
    if fmt == "json":
        first = next((line.strip() for _, line in decoded_lines(path) if line.strip()), "")
        fmt = "json_list" if first.startswith("[") else "jsonl"
    if fmt == "json_list":
        return json_list_records(path), "record"
    if fmt == "jsonl":
        return json_records(path), "line"
    if fmt in ("tsv", "csv"):
        return table_records(path, "\t" if fmt == "tsv" else ","), "line"
    raise DataError(f"{path}: cannot tell the format from the suffix; expected .json, .jsonl, .tsv or .csv "
                    "(or set data.format)")


# ----------------------------------------------------------------------------
# One record → conversations
# ----------------------------------------------------------------------------


class RecordParser:
    """Turns records into conversations in the format of the file's first record."""

    def __init__(self, options: InstructionTuningOptions, label_column: str, where: str, first: dict):
        self.options = options
        self.label_column = label_column
        if options.prompt_template is not None:
            self.format = "templated"
            used = template_fields(options.prompt_template) + template_fields(options.completion_template)
            needed = sorted({label_column if name == LABEL_NAME else name for name in used})
            missing = [name for name in needed if name not in first]
            if missing:
                raise DataError(f"{where}: task.prompt_template/completion_template use column(s) "
                                f"{', '.join(missing)}, which the data lacks; it has {', '.join(first)}")
        elif options.messages_column in first:
            self.format = "chat"
        elif options.instruction_column in first:
            self.format = "alpaca"
        elif options.prompt_column in first:
            self.format = "prompt_completion"
        else:
            raise DataError(
                f"{where}: cannot tell the format; expected the key(s) {options.prompt_column} + "
                f"{options.completion_column}, {options.instruction_column} + output|response, or "
                f"{options.messages_column} (or set task.prompt_template). The record has {', '.join(first)}")

    def __call__(self, record: dict, where: str) -> list[Conversation]:
        if self.format == "templated":
            return [self._templated(record, where)]
        if self.format == "chat":
            return [self._chat(record, where)]
        if self.format == "alpaca":
            return self._alpaca(record, where)
        prompt = _text(record, self.options.prompt_column, where)
        return [Conversation((Turn(prompt, _text(record, self.options.completion_column, where)),))]

    def _templated(self, record: dict, where: str) -> Conversation:
        values = dict(record)
        if self.options.label_names:
            label = str(_value(record, self.label_column, where)).strip()
            if label not in self.options.label_names:
                raise DataError(f"{where}: label {label!r} is not in task.label_names "
                                f"({', '.join(self.options.label_names)})")
            values[LABEL_NAME] = self.options.label_names[label]
        try:
            prompt = self.options.prompt_template.format_map(values)
            completion = self.options.completion_template.format_map(values)
        except KeyError as e:
            raise DataError(f"{where}: task.prompt_template/completion_template use column {e.args[0]!r}, "
                            f"which this record lacks; it has {', '.join(record)}") from None
        return Conversation((Turn(prompt.strip(), completion.strip()),))

    def _alpaca(self, record: dict, where: str) -> list[Conversation]:
        options = self.options
        instruction = _text(record, options.instruction_column, where)
        if "instances" in record:  # the Alpaca seed tasks
            instances = record["instances"]
            if not isinstance(instances, list) or not instances:
                raise DataError(f"{where}: 'instances' must be a non-empty list of {{input, output}} objects")
            return [self._alpaca_turn(instruction, item, f"{where} instance {i}")
                    for i, item in enumerate(instances, start=1)]
        return [self._alpaca_turn(instruction, record, where)]

    def _alpaca_turn(self, instruction: str, record, where: str) -> Conversation:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        key = self.options.output_column
        if key is None:
            key = next((k for k in ("output", "response") if k in record), "output|response")
        context = _text(record, self.options.input_column, where) if self.options.input_column in record else ""
        return Conversation((Turn(instruction, _text(record, key, where), context),))

    def _chat(self, record: dict, where: str) -> Conversation:
        messages = _value(record, self.options.messages_column, where)
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: {self.options.messages_column!r} must be a non-empty list of "
                            "{role, content} objects")
        system, turns, user = None, [], None
        for number, message in enumerate(messages, start=1):
            at = f"{where} message {number}"
            if not isinstance(message, dict):
                raise DataError(f"{at}: expected a {{role, content}} object, got {type(message).__name__}")
            role = _value(message, "role", at)
            if role not in ROLES:
                raise DataError(f"{at}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
            content = _text(message, "content", at)
            expected = "user" if user is None else "assistant"
            if role == "system" and number == 1:
                system = content
            elif role != expected:
                raise DataError(f"{at}: unexpected {role} message; expected {expected} (a conversation is an "
                                "optional system message, then user/assistant turns)")
            elif role == "user":
                user = content
            else:
                turns.append(Turn(user, content))
                user = None
        if user is not None or not turns:
            raise DataError(f"{where}: the conversation must end with an assistant message (the response)")
        return Conversation(tuple(turns), system)


def _value(record: dict, key: str, where: str):
    if key not in record:
        raise DataError(f"{where}: missing key {key!r}; the record has {', '.join(map(str, record)) or 'no keys'}")
    return record[key]


def _text(record: dict, key: str, where: str) -> str:
    value = _value(record, key, where)
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string. Received: {value!r}"[:300])
    return value


# ----------------------------------------------------------------------------
# A split
# ----------------------------------------------------------------------------


def _empty(conversation: Conversation) -> Optional[str]:
    """What is empty in a conversation ("prompt" or "response"), or None."""
    for turn in conversation.turns:
        if not turn.prompt.strip():
            return "prompt"
        if not turn.response.strip():
            return "response"
    return None


def read_file(spec: str, options: InstructionTuningOptions, *, fmt: Optional[str] = None,
              label_column: str = "label", skip_empty: bool = False,
              max_examples: Optional[int] = None) -> InstructionExamples:
    """Reads one instruction file (`spec` = path, optionally with a `[a:b]` slice)."""
    path_text, where_slice, slice_text = split_slice(spec)
    path = Path(path_text)
    records, unit = file_records(path, fmt)
    sep = ":" if unit == "line" else " record "
    parser, examples = None, []  # (conversation, record number) of every example of the file
    for number, record in records:
        where = f"{path}{sep}{number}"
        parser = parser or RecordParser(options, label_column, where, record)
        examples += [(conversation, number) for conversation in parser(record, where)]
    if parser is None:
        raise DataError(f"{path}: no records (the file is empty)")
    total = len(examples)
    if where_slice is not None:
        selected = slice_range(where_slice, total)
        examples = examples[selected.start:selected.stop]
    kept, skipped = [], 0
    for conversation, number in examples:
        if max_examples and len(kept) == max_examples:
            break
        problem = _empty(conversation)
        if problem and not skip_empty:
            raise DataError(f"{path}{sep}{number}: empty {problem}; expected a non-empty string "
                            "(set data.skip_empty: true to skip such examples)")
        skipped += bool(problem)
        if not problem:
            kept.append((conversation, number))
    if not kept:
        raise DataError(f"{path}{slice_text}: no examples (the file has {total}, the slice selects {len(examples)}"
                        f"{', ' + str(skipped) + ' of them empty' if skipped else ''})")
    return InstructionExamples([c for c, _ in kept], [n for _, n in kept], f"{path}{slice_text}", unit, skipped,
                               [parser.format])


def read_instruction_split(data, split: str, options: InstructionTuningOptions) -> InstructionExamples:
    """Split `split` of a `DataConfig` (local files only: `data.files`)."""
    if not data.use_files():
        raise DataError("task instruction_tuning reads local files (data.files: JSON, JSONL, TSV or CSV); "
                        "set TFSFT_DATA_DIR or data.data_dir, or give absolute paths")
    if split not in data.files:
        raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
    return read_file(str(data.file_path(split)), options, fmt=data.format, label_column=data.label_column,
                     skip_empty=data.skip_empty, max_examples=data.max_examples)
