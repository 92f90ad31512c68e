"""Readers for token-tagged sentences (NER): CoNLL files, JSON lines and TFDS.

Every reader returns `TokenExamples` whose tags are in IOB2, whatever scheme
the source uses (IOB1, IOB2 or BIOES), so the rest of the code knows one scheme:

    IOB1   I-PER I-PER B-PER O     (B- only between two adjacent chunks)
    IOB2   B-PER I-PER B-PER O     (every chunk starts with B-)
    BIOES  B-PER E-PER S-PER O     (E- ends a chunk, S- is a one-word chunk)

Conversion to IOB2: S-X → B-X, E-X → I-X, then an I-X that does not continue
a chunk of type X (after O, after another type, or first in the sentence)
becomes B-X. With `scheme="auto"` every tag prefix is accepted; naming a scheme
also checks that the tags follow it. Errors name the file and line (CoNLL: the
token's own line; JSON lines: the record's line and the token number).

CoNLL format: one token per line, the token in the first column and its tag in
the last (whitespace-separated; middle columns such as POS tags are ignored), a
blank line between sentences, `-DOCSTART-` lines skipped.

Example:
    >>> examples = read_conll("conll2003/train.txt")
    >>> examples.tokens[0], examples.tags[0]
    (['EU', 'rejects', ...], ['B-ORG', 'O', ...])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tfsft.data.readers import DataError, decoded_lines, json_records, load_tfds_split

SCHEMES = ("auto", "iob1", "iob2", "bioes")
_TAG = re.compile(r"^([BIES])-(\S+)$")
_PREFIXES = {"auto": "BIES", "iob1": "BI", "iob2": "BI", "bioes": "BIES"}


@dataclass
class TokenExamples:
    """Sentences as token lists with one IOB2 tag per token.

    Attributes:
        tokens: the words of each sentence.
        tags: the IOB2 tag of each word (None when the source has no tags).
        lines: where each sentence starts (1-based line, or TFDS record number).
        source: file path or `tfds:<name>[<split>]`, for messages.
        token_per_line: True for CoNLL files, where token j of sentence i sits
            on line `lines[i] + j`.
        skipped_empty: sentences left out because they had no tokens.
        label_names: tag names declared by the source (TFDS ClassLabel).
    """

    tokens: list[list[str]]
    tags: Optional[list[list[str]]]
    lines: list[int]
    source: str
    token_per_line: bool = False
    skipped_empty: int = 0
    label_names: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.tokens)

    def where(self, index: int, token: Optional[int] = None) -> str:
        """`file:line` of sentence `index` (and of its token `token`)."""
        if token is None:
            return f"{self.source}:{self.lines[index]}"
        if self.token_per_line:
            return f"{self.source}:{self.lines[index] + token}"
        return f"{self.source}:{self.lines[index]} (token {token + 1})"


def split_tag(tag: str) -> tuple[str, str]:
    """`"B-PER"` → `("B", "PER")`; `"O"` → `("O", "")`. Raises ValueError if ill-formed."""
    if tag == "O":
        return "O", ""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(tag)
    return match.group(1), match.group(2)


def to_iob2(tags: list[str], scheme: str, where: Callable[[int], str]) -> list[str]:
    """Converts one sentence's tags from `scheme` to IOB2, checking them.

    Args:
        tags: the tags of one sentence, in order.
        scheme: "auto", "iob1", "iob2" or "bioes".
        where: token index → `file:line` for error messages.

    Raises:
        DataError: for an ill-formed tag, a prefix the scheme does not have,
            or (iob2/bioes) a chunk that does not start or end as it must.
    """
    allowed = _PREFIXES[scheme]
    parsed = []
    for j, tag in enumerate(tags):
        try:
            prefix, kind = split_tag(tag)
        except ValueError:
            raise DataError(f"{where(j)}: ill-formed tag {tag!r}; expected O or "
                            f"{'/'.join(p + '-' for p in allowed)}<TYPE>") from None
        if prefix != "O" and prefix not in allowed:
            raise DataError(f"{where(j)}: tag {tag!r} is not {scheme.upper()}; expected O or "
                            f"{'/'.join(p + '-' for p in allowed)}<TYPE> (set task.scheme to the file's scheme)")
        parsed.append((prefix, kind))
    out = []
    for j, (prefix, kind) in enumerate(parsed):
        before = parsed[j - 1] if j else ("O", "")
        after = parsed[j + 1] if j + 1 < len(parsed) else ("O", "")
        continues = before[0] in "BI" and before[1] == kind
        if scheme == "iob2" and prefix == "I" and not continues:
            raise DataError(f"{where(j)}: {tags[j]!r} follows {tags[j - 1] if j else 'the sentence start'!r}; "
                            "IOB2 chunks start with B- (set task.scheme: iob1 or auto for IOB1 data)")
        if scheme == "bioes":
            if prefix in "IE" and not continues:
                raise DataError(f"{where(j)}: {tags[j]!r} does not continue a {kind} chunk (BIOES)")
            if prefix in "BI" and not (after[0] in "IE" and after[1] == kind):
                raise DataError(f"{where(j)}: the {kind} chunk at {tags[j]!r} does not end with E-{kind} (BIOES)")
        if prefix == "O":
            out.append("O")
        elif prefix in "BS" or (prefix in "IE" and not continues):
            out.append(f"B-{kind}")
        else:  # I-/E- continuing the chunk (an E-/S- before it ends a chunk, so never "continues")
            out.append(f"I-{kind}")
    return out


class _Sentences:
    """Collects sentences, converting tags and applying the empty policy."""

    def __init__(self, source: str, scheme: str, token_per_line: bool, max_examples: Optional[int]):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}. Received: scheme={scheme!r}")
        self.examples = TokenExamples([], [], [], source, token_per_line)
        self.scheme, self.max_examples = scheme, max_examples

    @property
    def full(self) -> bool:
        return bool(self.max_examples) and len(self.examples) >= self.max_examples

    def add(self, line: int, tokens: list[str], tags: list[str], skip_empty: bool = True) -> None:
        ex = self.examples
        if not tokens:
            if not skip_empty:
                raise DataError(f"{ex.source}:{line}: a sentence with no tokens (set data.skip_empty: true to skip it)")
            ex.skipped_empty += 1
            return
        index = len(ex.tokens)
        ex.tokens.append(tokens)
        ex.lines.append(line)
        ex.tags.append(to_iob2(tags, self.scheme, lambda j: ex.where(index, j)))

    def result(self) -> TokenExamples:
        if not self.examples.tokens:
            raise DataError(f"{self.examples.source}: no sentences (the source is empty)")
        return self.examples


def read_conll(path: str | Path, *, scheme: str = "auto", max_examples: Optional[int] = None) -> TokenExamples:
    """Reads a CoNLL file: `token [other columns] TAG` per line, blank lines between sentences.

    Args:
        path: the file.
        scheme: the file's tag scheme ("auto", "iob1", "iob2", "bioes").
        max_examples: stop after this many sentences.
    """
    path = Path(path)
    sentences = _Sentences(str(path), scheme, token_per_line=True, max_examples=max_examples)
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for line, text in decoded_lines(path):
        fields = text.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.add(start, tokens, tags)
                tokens, tags = [], []
                if sentences.full:
                    break
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{line}: no tag after the token {fields[0]!r}; expected "
                            "`token TAG` (the tag in the last column, separated by whitespace)")
        if not tokens:
            start = line
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens and not sentences.full:
        sentences.add(start, tokens, tags)
    return sentences.result()


def read_token_jsonl(path: str | Path, *, tokens_key: str = "tokens", tags_key: str = "tags",
                     scheme: str = "auto", skip_empty: bool = False,
                     max_examples: Optional[int] = None) -> TokenExamples:
    """Reads JSON lines `{"tokens": [...], "tags": [...]}` (keys configurable)."""
    path = Path(path)
    sentences = _Sentences(str(path), scheme, token_per_line=False, max_examples=max_examples)
    for line, record in json_records(path):
        for key in (tokens_key, tags_key):
            if key not in record:
                raise DataError(f"{path}:{line}: missing key {key!r}; the object has {', '.join(record)}")
            value = record[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"{path}:{line}: {key!r} must be a list of strings. Received: {value!r:.80}")
        tokens, tags = record[tokens_key], record[tags_key]
        if len(tokens) != len(tags):
            raise DataError(f"{path}:{line}: {len(tokens)} tokens but {len(tags)} tags; expected one tag per token")
        bad = [j for j, token in enumerate(tokens) if not token.strip()]
        if bad:
            raise DataError(f"{path}:{line} (token {bad[0] + 1}): empty token; expected a non-empty string")
        sentences.add(line, tokens, tags, skip_empty)
        if sentences.full:
            break
    return sentences.result()


def read_token_tfds(name: str, split: str, *, tokens_key: str = "tokens", tags_key: str = "ner",
                    scheme: str = "auto", data_dir: Optional[str] = None, skip_empty: bool = False,
                    max_examples: Optional[int] = None) -> TokenExamples:
    """Reads a TFDS split whose records hold a token sequence and a ClassLabel tag sequence.

    Example: `read_token_tfds("conll2003", "train")` (features `tokens`, `ner`).
    """
    source = f"tfds:{name}[{split}]"
    records, features = load_tfds_split(name, split, data_dir, [tokens_key, tags_key], "local CoNLL files")
    names = list(getattr(getattr(features[tags_key], "feature", None), "names", []) or []) or None
    sentences = _Sentences(source, scheme, token_per_line=False, max_examples=max_examples)
    for number, record in enumerate(records, start=1):
        tokens = [t.decode("utf-8") for t in record[tokens_key]]
        tags = [names[int(t)] if names else (t.decode("utf-8") if isinstance(t, bytes) else str(t))
                for t in record[tags_key]]
        if len(tokens) != len(tags):
            raise DataError(f"{source} record {number}: {len(tokens)} tokens but {len(tags)} tags")
        sentences.add(number, tokens, tags, skip_empty)
        if sentences.full:
            break
    result = sentences.result()
    result.label_names = names
    return result


TOKEN_FORMATS = {".txt": "conll", ".conll": "conll", ".iob": "conll", ".bio": "conll",
                 ".jsonl": "jsonl", ".json": "jsonl"}


def read_token_split(data, split: str, scheme: str = "auto") -> TokenExamples:
    """Reads split `split` ("train", "validation", "test") of a `DataConfig` for tagging.

    Files use `data.format` or their suffix (.txt/.conll → CoNLL, .jsonl → JSON
    lines with keys `data.tokens_column`/`data.tags_column`); otherwise the
    `data.tfds` source, whose features are named by the same two keys.
    """
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        path = data.file_path(split)
        fmt = data.format or TOKEN_FORMATS.get(path.suffix.lower())
        if fmt == "conll":
            return read_conll(path, scheme=scheme, max_examples=data.max_examples)
        if fmt == "jsonl":
            return read_token_jsonl(path, tokens_key=data.tokens_column, tags_key=data.tags_column, scheme=scheme,
                                    skip_empty=data.skip_empty, max_examples=data.max_examples)
        raise DataError(f"{path}: token classification reads CoNLL or JSON lines; set data.format to conll or "
                        f"jsonl. Received: format={fmt!r}")
    tfds_split = getattr(data.tfds, split, None) if data.tfds else None
    if not tfds_split:
        raise DataError(f"no data.tfds.{split} split in the config")
    return read_token_tfds(data.tfds.name, tfds_split, tokens_key=data.tokens_column, tags_key=data.tags_column,
                           scheme=scheme, data_dir=data.tfds.data_dir, skip_empty=data.skip_empty,
                           max_examples=data.max_examples)
