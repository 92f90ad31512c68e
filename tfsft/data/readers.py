"""Readers: labelled text from TSV/CSV, JSON lines and TFDS into `TextExamples`.

Every error names the file and line (or the TFDS split and record) and what was
expected. Rows with empty text are an error unless `skip_empty` is set, in which
case they are counted in `TextExamples.skipped_empty`, never silently dropped.
"""

from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclass
class TextExamples:
    """Parallel lists of examples read from one split.

    Attributes:
        texts: the first (or only) text of each example.
        pairs: the second text for sentence-pair tasks, else None.
        labels: the raw label of each example (str, or float for regression),
            None when the source has no label column.
        lines: where each example came from (1-based line, or record number).
        source: file path or `tfds:<name>[<split>]`, for messages.
        skipped_empty: rows left out because their text was empty.
        label_names: class names declared by the source (TFDS ClassLabel).
    """

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list]
    lines: list[int]
    source: str
    skipped_empty: int = 0
    label_names: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, index: int) -> str:
        """`file:line` of example `index`, for error messages."""
        return f"{self.source}:{self.lines[index]}"


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, text)`; undecodable bytes raise with the line.

    A UTF-8 byte-order mark at the start of the file is removed.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{number}: bytes that are not UTF-8 at column {e.start + 1} "
                    f"({raw[e.start:e.start + 4]!r}); expected UTF-8 text"
                ) from None


def json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yields `(line_number, object)` of a JSON-lines file, skipping blank lines.

    Invalid JSON and non-object lines raise `DataError` naming the line.
    """
    for line, text in decoded_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
        yield line, record


class _Collector:
    """Accumulates rows, applying the empty-text policy."""

    def __init__(self, source: str, has_pair: bool, has_label: bool, skip_empty: bool):
        self.source, self.skip_empty = source, skip_empty
        self.texts: list[str] = []
        self.pairs: Optional[list[str]] = [] if has_pair else None
        self.labels: Optional[list] = [] if has_label else None
        self.lines: list[int] = []
        self.skipped = 0

    def add(self, line: int, text, pair=None, label=None) -> None:
        text = "" if text is None else str(text)
        pair = None if self.pairs is None else ("" if pair is None else str(pair))
        if not text.strip() or (pair is not None and not pair.strip()):
            if self.skip_empty:
                self.skipped += 1
                return
            raise DataError(
                f"{self.source}:{line}: empty text; expected a non-empty string "
                "(set data.skip_empty: true to skip such rows)"
            )
        if self.labels is not None:
            if label is None or (isinstance(label, str) and not label.strip()):
                raise DataError(f"{self.source}:{line}: missing label")
            self.labels.append(label.strip() if isinstance(label, str) else label)
        self.texts.append(text)
        if self.pairs is not None:
            self.pairs.append(pair)
        self.lines.append(line)

    def result(self, label_names=None) -> TextExamples:
        if not self.texts:
            raise DataError(f"{self.source}: no examples (the file is empty or every row was skipped)")
        return TextExamples(self.texts, self.pairs, self.labels, self.lines, self.source, self.skipped, label_names)


def read_table(
    path: str | Path,
    *,
    delimiter: str,
    header: bool = True,
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = "label",
    skip_empty: bool = False,
    max_examples: Optional[int] = None,
) -> TextExamples:
    """Reads a TSV or CSV file (quoted fields allowed).

    Without a header, columns are named by their 0-based index ("0", "1", ...).
    """
    path = Path(path)
    lines = decoded_lines(path)
    reader = csv.reader((text for _, text in lines), delimiter=delimiter, quotechar='"')
    collector = _Collector(str(path), text_pair_column is not None, label_column is not None, skip_empty)
    columns: Optional[list[str]] = None
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    index: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip() and columns is not None):
            continue  # blank line
        if columns is None:
            columns = row if header else [str(i) for i in range(len(row))]
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise DataError(
                    f"{path}:1: missing column(s) {', '.join(missing)}; the "
                    f"{'header' if header else 'rows'} has {', '.join(columns)}"
                )
            index = {c: columns.index(c) for c in wanted}
            if header:
                continue
        if len(row) < len(columns):
            raise DataError(f"{path}:{line}: {len(row)} field(s), expected {len(columns)} ({', '.join(columns)})")
        collector.add(
            line,
            row[index[text_column]],
            row[index[text_pair_column]] if text_pair_column else None,
            row[index[label_column]] if label_column else None,
        )
        if max_examples and len(collector.texts) >= max_examples:
            break
    if columns is None:
        raise DataError(f"{path}: the file is empty")
    return collector.result()


def read_jsonl(
    path: str | Path,
    *,
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = "label",
    skip_empty: bool = False,
    max_examples: Optional[int] = None,
) -> TextExamples:
    """Reads JSON lines: one object per line with the configured keys."""
    path = Path(path)
    collector = _Collector(str(path), text_pair_column is not None, label_column is not None, skip_empty)
    for line, record in json_records(path):
        for key in (text_column, text_pair_column, label_column):
            if key is not None and key not in record:
                raise DataError(f"{path}:{line}: missing key {key!r}; the object has {', '.join(record)}")
        collector.add(
            line,
            record[text_column],
            record[text_pair_column] if text_pair_column else None,
            record[label_column] if label_column else None,
        )
        if max_examples and len(collector.texts) >= max_examples:
            break
    return collector.result()


def load_tfds_split(name: str, split: str, data_dir: Optional[str], keys: list[Optional[str]],
                    local_files: str = "local files"):
    """`(records, features)` of a TFDS split — its records as NumPy — checking that every key in `keys` (None skipped) is a feature.

    Errors name the split as `tfds:<name>[<split>]`: a dataset that cannot be
    loaded (offline: point at `local_files` instead) or a missing feature.
    """
    import tensorflow_datasets as tfds

    source = f"tfds:{name}[{split}]"
    try:
        dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True)
    except Exception as e:  # download or name errors come in many types
        raise DataError(f"{source}: cannot load ({type(e).__name__}: {e}). Offline? Point data.data_dir "
                        f"or TFSFT_DATA_DIR at {local_files} instead.") from None
    features = info.features
    for key in keys:
        if key is not None and key not in features:
            raise DataError(f"{source}: no feature {key!r}; the dataset has {', '.join(features.keys())}")
    return tfds.as_numpy(dataset), features


def read_tfds(
    name: str,
    split: str,
    *,
    data_dir: Optional[str] = None,
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = "label",
    skip_empty: bool = False,
    max_examples: Optional[int] = None,
) -> TextExamples:
    """Reads a TFDS dataset split (slicing like `train[:10%]` works).

    Integer `ClassLabel` labels become their class names, which are also
    returned as `label_names` so the label order matches the dataset's.
    """
    source = f"tfds:{name}[{split}]"
    records, features = load_tfds_split(name, split, data_dir, [text_column, text_pair_column, label_column])
    label_feature = features[label_column] if label_column else None
    names = list(getattr(label_feature, "names", []) or []) or None
    collector = _Collector(source, text_pair_column is not None, label_column is not None, skip_empty)
    for record_number, record in enumerate(records, start=1):
        def text(key):
            value = record[key]
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)

        label = None
        if label_column:
            value = record[label_column]
            label = names[int(value)] if names and int(value) >= 0 else (None if names else float(value))
            if names and int(value) < 0:  # GLUE test splits carry label -1
                label = None
        collector.add(record_number, text(text_column), text(text_pair_column) if text_pair_column else None, label)
        if max_examples and len(collector.texts) >= max_examples:
            break
    return collector.result(label_names=names)


FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_split(data, split: str, *, require_label: bool = True, columns: Optional[dict] = None,
               read_suffixless: Optional[Callable[[Path], TextExamples]] = None) -> TextExamples:
    """Reads split `split` ("train", "validation", "test") of a `DataConfig`.

    The one dispatch of every text task: local files by suffix (or
    `data.format`), else the TFDS source.

    Args:
        data: the `DataConfig`.
        split: "train", "validation" or "test".
        require_label: read `data.label_column` (else no labels).
        columns: `text_column` / `text_pair_column` / `label_column` to use
            instead of the config's (e.g. translation's language codes).
        read_suffixless: reads a file path with no known suffix (e.g. the
            line-aligned `<path>.<lang>` files of translation); without it
            such a path is an error.
    """
    common = dict(
        text_column=data.text_column,
        text_pair_column=data.text_pair_column,
        label_column=data.label_column if require_label else None,
        skip_empty=data.skip_empty,
        max_examples=data.max_examples,
    )
    common.update(columns or {})
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        path = data.file_path(split)
        fmt = data.format or FORMATS.get(path.suffix.lower())
        if fmt is None and read_suffixless is not None:
            return read_suffixless(path)
        if fmt is None:
            raise DataError(f"{path}: cannot tell the format from the suffix; set data.format to tsv, csv or jsonl")
        if fmt == "jsonl":
            return read_jsonl(path, **common)
        return read_table(path, delimiter="\t" if fmt == "tsv" else ",", header=data.header, **common)
    tfds_split = getattr(data.tfds, split, None) if data.tfds else None
    if not tfds_split:
        raise DataError(f"no data.tfds.{split} split in the config")
    return read_tfds(data.tfds.name, tfds_split, data_dir=data.tfds.data_dir, **common)
