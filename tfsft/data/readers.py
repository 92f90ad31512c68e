"""Readers: labelled text from TSV/CSV, JSON lines and TFDS into `TextExamples`.

Every error names the file and line (or the TFDS split and record) and what was
expected. Rows with empty text are an error unless `skip_empty` is set, in which
case they are counted in `TextExamples.skipped_empty`, never silently dropped.

One file can give several splits: a file path may end with a TFDS-style slice
of its examples (`reviews.csv[:80%]`, `[80%:]`, `[-500:]`), and `data.split`
draws seeded (optionally stratified) random validation/test parts from the
train source, for files sorted by label.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import random
import re
import socket
from collections import Counter
from dataclasses import dataclass, replace
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
        skipped_empty: rows of the file left out because their text was
            empty (all of the file's, for a slice or a `data.split` part).
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

    def subset(self, indices, source: str) -> TextExamples:
        """The examples at `indices`, in that order, named `source`."""
        pick = lambda values: None if values is None else [values[i] for i in indices]
        return replace(self, texts=pick(self.texts), pairs=pick(self.pairs), labels=pick(self.labels),
                       lines=pick(self.lines), source=source)

    def describe(self) -> str:
        """`source: N examples; labels a 10, b 12` (the count per label, up to 20 labels)."""
        text = f"{self.source}: {len(self):,} examples"
        if self.labels is None:
            return text
        counts = Counter(self.labels)
        if len(counts) > 20:
            return f"{text}; {len(counts):,} distinct labels"
        labels = sorted(counts, key=_label_order)
        return f"{text}; labels " + ", ".join(f"{label} {counts[label]:,}" for label in labels)


def _label_order(label) -> tuple:
    """Numbers by value (regression scores, "10" after "9"), then other labels as text."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, str(label))


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, text)`; undecodable bytes raise with the line.

    A UTF-8 byte-order mark at the start of the file is removed.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        where = "" if Path(path).is_absolute() else f" (looked up in {Path(os.path.abspath(path)).parent})"
        raise DataError(f"{path}: file not found{where}") from None
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


_SLICE = re.compile(r"^(?P<path>.*)\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\]$")


def split_slice(spec: str) -> tuple[str, slice | None, str]:
    """Splits `"path[a:b]"` into `(path, slice or None, the slice text)`.

    Bounds are counts (`[:1000]`, `[-500:]`) or percentages (`[:95%]`) of the
    file's examples (documents, for a corpus), as in TFDS split slicing.
    """
    match = _SLICE.match(spec.strip())
    if not match:
        return spec, None, ""
    bounds = (match["start"], match["stop"])
    return match["path"], slice(*(b or None for b in bounds)), f"[{bounds[0]}:{bounds[1]}]"


def slice_range(where: slice, total: int) -> range:
    """The indices a `split_slice` slice selects among `total` items."""
    def bound(value: str | None) -> int | None:
        if value is None:
            return None
        return round(int(value[:-1]) * total / 100) if value.endswith("%") else int(value)

    return range(*slice(bound(where.start), bound(where.stop)).indices(total))


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
    quoting: bool = True,
    text_column: str = "text",
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = "label",
    skip_empty: bool = False,
    max_examples: Optional[int] = None,
) -> TextExamples:
    """Reads a TSV or CSV file.

    Without a header, columns are named by their 0-based index ("0", "1", ...).
    With `quoting`, a field that starts with `"` is quoted (it may hold the
    delimiter and newlines; `""` is a quote); without, quotes are plain text.
    Every row must have as many fields as the first.
    """
    path = Path(path)
    raw: list[str] = []  # the lines of the current row, for the quoting hint

    def texts():
        for _, text in decoded_lines(path):
            raw.append(text)
            yield text

    reader = csv.reader(texts(), delimiter=delimiter, quotechar='"',
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    collector = _Collector(str(path), text_pair_column is not None, label_column is not None, skip_empty)
    columns: Optional[list[str]] = None
    wanted = [c for c in (text_column, text_pair_column, label_column) if c is not None]
    index: dict[str, int] = {}
    for row in reader:
        line, row_text = reader.line_num, "".join(raw)
        raw.clear()
        if not row or (len(row) == 1 and not row[0].strip() and columns is not None):
            continue  # blank line
        if columns is None:
            columns = row if header else [str(i) for i in range(len(row))]
            missing = [c for c in wanted if c not in columns]
            if missing and header:
                raise DataError(f"{path}:{line}: missing column(s) {', '.join(missing)}; the header has "
                                f"{', '.join(columns)} (if the file has no header, set data.header: false and "
                                "name columns by position: 0, 1, ...)")
            if missing:
                names = f"{', '.join(columns[:-1])} and {columns[-1]}" if len(columns) > 1 else columns[0]
                raise DataError(f"{path}:{line}: missing column(s) {', '.join(missing)}; the rows have "
                                f"{len(columns)} column{'s' if len(columns) > 1 else ''}, {names} "
                                "(data.header: false)")
            index = {c: columns.index(c) for c in wanted}
            if header:
                continue
        if len(row) != len(columns):
            hint = ("; a field that starts with \" is read as quoted, up to the next \" (set data.quoting: false "
                    "if quotes are part of the text)") if quoting and '"' in row_text else ""
            raise DataError(f"{path}:{line}: {len(row)} field(s), expected {len(columns)} "
                            f"({', '.join(columns)}){hint}")
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


TFDS_HOST = "storage.googleapis.com"  # TFDS' bucket of prepared datasets, the first place tfds.load downloads from


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_tfds_split(name: str, split: str, data_dir: Optional[str], keys: list[Optional[str]],
                    local_files: str = "local files"):
    """`(records, features)` of a TFDS split — its records as NumPy — checking that every key in `keys` (None skipped) is a feature.

    Errors name the split as `tfds:<name>[<split>]`: a dataset that cannot be
    loaded (offline: point at `local_files` instead) or a missing feature.
    A dataset that still has to be downloaded fails at once on a machine
    without internet (TFDS itself retries for minutes: 3.4 min measured for
    conll2003), told by `TFDS_HOST` not resolving.
    """
    import tensorflow_datasets as tfds

    source = f"tfds:{name}[{split}]"
    def load(download: bool):
        return tfds.load(name, split=split, data_dir=data_dir, with_info=True, download=download)

    try:
        try:
            dataset, info = load(download=False)
        except AssertionError:  # TFDS' "could not find data": not downloaded yet
            if not _resolves(TFDS_HOST):
                raise ConnectionError(f"not downloaded to {data_dir or tfds.core.constants.DATA_DIR}, and "
                                      f"{TFDS_HOST} does not resolve") from None
            dataset, info = load(download=True)
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
    `data.format`, a file may end with a slice: `reviews.csv[:80%]`), else the
    TFDS source; with `data.split`, its parts are drawn from the train source.
    `data.max_examples` caps the examples of the split (after slicing and
    drawing).

    Args:
        data: the `DataConfig`.
        split: "train", "validation" or "test".
        require_label: read `data.label_column` (else no labels).
        columns: `text_column` / `text_pair_column` / `label_column` to use
            instead of the config's (e.g. translation's language codes).
        read_suffixless: reads a whole file path with no known suffix (e.g.
            the line-aligned `<path>.<lang>` files of translation); without
            it such a path is an error.
    """
    common = dict(
        text_column=data.text_column,
        text_pair_column=data.text_pair_column,
        label_column=data.label_column if require_label else None,
        skip_empty=data.skip_empty,
    )
    common.update(columns or {})
    drawn = data.split is not None and (split == "train" or split in data.split.fractions())
    if not drawn:
        return _read_source(data, split, common, read_suffixless, data.max_examples)
    whole = _read_source(data, "train", common, read_suffixless, None)
    part = whole.subset(random_split(whole, data.split)[split], f"{whole.source}[data.split.{split}]")
    return _first(part, data.max_examples)


def _first(examples: TextExamples, count: Optional[int]) -> TextExamples:
    """The first `count` examples (all when `count` is None)."""
    return examples if count is None or len(examples) <= count else examples.subset(range(count), examples.source)


def _read_source(data, split: str, common: dict, read_suffixless, max_examples: Optional[int]) -> TextExamples:
    """Split `split` of the files (a slice applied) or of the TFDS source, at most `max_examples`."""
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        path_text, where, where_text = split_slice(data.files[split])
        path = data.resolve_path(path_text)
        fmt = data.format or FORMATS.get(path.suffix.lower())
        if fmt is None and read_suffixless is None:
            raise DataError(f"{path}: cannot tell the format from the suffix; set data.format to tsv, csv or jsonl")
        cap = None if where else max_examples  # stop reading early when no slice needs the whole file
        if fmt is None:
            examples = read_suffixless(path)
        elif fmt == "jsonl":
            examples = read_jsonl(path, max_examples=cap, **common)
        else:
            examples = read_table(path, delimiter="\t" if fmt == "tsv" else ",", header=data.header,
                                  quoting=data.quoting, max_examples=cap, **common)
        if where:
            selected = slice_range(where, len(examples))
            if not selected:
                raise DataError(f"{path}{where_text}: the slice selects no examples (the file has {len(examples)})")
            examples = examples.subset(selected, f"{path}{where_text}")
        return _first(examples, max_examples)
    tfds_split = getattr(data.tfds, split, None) if data.tfds else None
    if not tfds_split:
        raise DataError(f"no data.tfds.{split} split in the config")
    return read_tfds(data.tfds.name, tfds_split, data_dir=data.tfds.data_dir, max_examples=max_examples, **common)


def random_split(examples: TextExamples, split) -> dict[str, list[int]]:
    """Indices of the `train`, `validation` and `test` parts of `examples` drawn by a `SplitConfig`.

    The examples are shuffled with `split.seed` (with `split.stratify`, within
    each label, the labels one after another) and every k-th goes to a part,
    so each part holds its fraction of the examples (and, stratified, of each
    label, give or take one). Each part keeps the file order.
    """
    indices = list(range(len(examples)))
    rng = random.Random(split.seed)
    if split.stratify:
        if examples.labels is None:
            raise DataError(f"{examples.source}: data.split.stratify: the examples have no labels")
        by_label: dict = {}
        for i in indices:
            by_label.setdefault(examples.labels[i], []).append(i)
        order = []
        for label in sorted(by_label, key=_label_order):
            rng.shuffle(by_label[label])
            order += by_label[label]
    else:
        order = indices[:]
        rng.shuffle(order)
    parts = {}
    for role, fraction in split.fractions().items():
        count = round(fraction * len(examples))
        if count == 0:
            raise DataError(f"{examples.source}: data.split.{role}: {fraction} of {len(examples)} examples is no "
                            "example; give a larger fraction")
        chosen = {i for i in range(len(order)) if (i + 1) * count // len(order) > i * count // len(order)}
        parts[role] = sorted(order[i] for i in chosen)
        order = [index for i, index in enumerate(order) if i not in chosen]
    if not order:
        raise DataError(f"{examples.source}: data.split leaves no examples to train on")
    return {"train": sorted(order), **parts}
