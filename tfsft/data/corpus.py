"""Corpora for pretraining: unlabelled documents from text files, tables and TFDS.

A corpus is a list of documents. Sources:

* plain text (any suffix but .tsv/.csv/.jsonl/.json): `documents="lines"` makes
  each non-blank line a document; `documents="paragraphs"` makes each run of
  non-blank lines (separated by blank lines) one document, its lines joined by
  "\\n";
* tables (.tsv, .csv, .jsonl): the `data.text_column` of each row;
* TFDS: the `data.text_column` feature of each record (`data.tfds`).

A file path may end with a TFDS-style slice over its documents, so one file
gives both a training and a held-out split::

    files: {train: "tinyshakespeare/input.txt[:95%]",
            validation: "tinyshakespeare/input.txt[95%:]"}

Errors name the file and line (`DataError`), like the labelled readers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tfsft.data.readers import (
    FORMATS,
    DataError,
    decoded_lines,
    read_jsonl,
    read_table,
    read_tfds,
    slice_range,
    split_slice,
)

Documents = Literal["lines", "paragraphs"]


@dataclass
class Corpus:
    """Documents read from one or more sources.

    Attributes:
        texts: the documents.
        lines: where each document starts (1-based line, or TFDS record number).
        parts: `(source, first document index)` of each source, in order.
        skipped_empty: always 0 (blank lines separate documents; nothing is
            dropped); kept so a corpus reads like `TextExamples`.
    """

    texts: list[str]
    lines: list[int]
    parts: list[tuple[str, int]] = field(default_factory=list)
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def source(self) -> str:
        return " + ".join(source for source, _ in self.parts)

    def where(self, index: int) -> str:
        """`file:line` where document `index` starts, for error messages."""
        part = bisect.bisect_right([start for _, start in self.parts], index) - 1
        return f"{self.parts[part][0]}:{self.lines[index]}"

    def __add__(self, other: Corpus) -> Corpus:
        offset = len(self.texts)
        return Corpus(
            self.texts + other.texts,
            self.lines + other.lines,
            self.parts + [(source, start + offset) for source, start in other.parts],
        )


def _apply_slice(corpus: Corpus, where: slice, text: str) -> Corpus:
    selected = slice_range(where, len(corpus))
    source = corpus.parts[0][0] + text
    if not selected:
        raise DataError(f"{source}: the slice selects no documents (the source has {len(corpus)})")
    return Corpus(corpus.texts[selected.start:selected.stop], corpus.lines[selected.start:selected.stop],
                  [(source, 0)])


def read_text_file(path: str | Path, documents: Documents = "lines") -> Corpus:
    """Reads a plain UTF-8 text file into documents.

    Args:
        path: the file.
        documents: "lines" (one document per non-blank line, its trailing
            whitespace removed) or "paragraphs" (blank-line-separated blocks,
            each block's lines joined with "\\n").

    Returns:
        A `Corpus`; `DataError` when the file is missing, not UTF-8, or holds
        no text.

    Example:
        >>> read_text_file("../shared/data/multi30k/train.en").texts[0]
        'Two young, White males are outside near many bushes.'
    """
    if documents not in ("lines", "paragraphs"):
        raise ValueError(f"documents must be 'lines' or 'paragraphs'. Received: documents={documents!r}")
    texts: list[str] = []
    starts: list[int] = []
    block: list[str] = []
    for number, raw in decoded_lines(Path(path)):
        line = raw.rstrip("\r\n")
        if documents == "lines":
            if line.strip():
                texts.append(line.rstrip())
                starts.append(number)
            continue
        if line.strip():
            if not block:
                starts.append(number)
            block.append(line.rstrip())
        elif block:
            texts.append("\n".join(block))
            block = []
    if block:
        texts.append("\n".join(block))
    if not texts:
        raise DataError(f"{path}: no text (the file is empty or holds only blank lines)")
    return Corpus(texts, starts, [(str(path), 0)])


def read_corpus_file(spec: str | Path, documents: Documents = "lines", text_column: str = "text",
                     format: str | None = None) -> Corpus:
    """Reads one corpus file: plain text, or the `text_column` of a table.

    `spec` may end with a slice over the documents (`input.txt[:95%]`).
    `format` ("tsv", "csv", "jsonl") overrides the guess from the suffix; plain
    text is read for any other suffix.
    """
    path_text, where, where_text = split_slice(str(spec))
    path = Path(path_text)
    fmt = format or FORMATS.get(path.suffix.lower())
    if fmt is None:
        corpus = read_text_file(path, documents)
    else:
        if fmt == "jsonl":
            rows = read_jsonl(path, text_column=text_column, label_column=None)
        else:
            rows = read_table(path, delimiter="\t" if fmt == "tsv" else ",", text_column=text_column,
                              label_column=None)
        corpus = Corpus([t.strip() for t in rows.texts], rows.lines, [(str(path), 0)])
    return _apply_slice(corpus, where, where_text) if where else corpus


def read_tfds_corpus(name: str, split: str, text_column: str = "text", data_dir: str | None = None) -> Corpus:
    """The `text_column` feature of each record of a TFDS split (slices like `train[:5%]` work)."""
    rows = read_tfds(name, split, data_dir=data_dir, text_column=text_column, label_column=None)
    return Corpus(rows.texts, rows.lines, [(rows.source, 0)])


def read_corpus(data, split: str, documents: Documents = "lines", extra_files: tuple[str, ...] = ()) -> Corpus:
    """Reads split `split` of a `DataConfig` as a corpus.

    Args:
        data: the `DataConfig` (files or TFDS source, `text_column`, `format`,
            `max_examples` caps the number of documents).
        split: "train", "validation" or "test".
        documents: how plain-text files divide into documents.
        extra_files: more corpus files appended after the split's own source
            (paths relative to the data directory like `data.files`).

    Returns:
        The concatenated `Corpus`.
    """
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        specs = [data.files[split], *extra_files]
        root = data.resolved_data_dir()
        corpus = None
        for spec in specs:
            path = Path(spec).expanduser()
            path = path if path.is_absolute() or root is None else root / path
            part = read_corpus_file(path, documents, data.text_column, data.format)
            corpus = part if corpus is None else corpus + part
    else:
        tfds_split = getattr(data.tfds, split, None) if data.tfds else None
        if not tfds_split:
            raise DataError(f"no data.tfds.{split} split in the config")
        corpus = read_tfds_corpus(data.tfds.name, tfds_split, data.text_column, data.tfds.data_dir)
        for spec in extra_files:
            corpus = corpus + read_corpus_file(Path(spec).expanduser(), documents, data.text_column, data.format)
    if data.max_examples and len(corpus) > data.max_examples:
        corpus = Corpus(corpus.texts[: data.max_examples], corpus.lines[: data.max_examples],
                        [p for p in corpus.parts if p[1] < data.max_examples])
    return corpus

