"""Readers for token-tagged sentences: CoNLL, CoNLL-U and word/TAG files, JSON lines and TFDS.

Entity tags (NER, chunking) come out in IOB2, whatever scheme the source uses
(IOB1, IOB2 or BIOES), so the rest of the code knows one scheme:

    IOB1   I-PER I-PER B-PER O     (B- only between two adjacent chunks)
    IOB2   B-PER I-PER B-PER O     (every chunk starts with B-)
    BIOES  B-PER E-PER S-PER O     (E- ends a chunk, S- is a one-word chunk)

Conversion to IOB2: S-X → B-X, E-X → I-X, then an I-X that does not continue
a chunk of type X (after O, after another type, or first in the sentence)
becomes B-X. With `scheme="auto"` every tag prefix is accepted; naming a scheme
also checks that the tags follow it. Plain tags (part of speech: NN, VBZ, ...;
any per-token label that is not an entity scheme) are kept as they are, with
`scheme="none"`, or with `"auto"` when no tag of the split is O or has a
B-/I-/E-/S- prefix. Errors name the file and line (CoNLL: the token's own
line; other formats: the sentence's line and the token number).

CoNLL format: one token per line, the token in the first column and its tag in
the last (whitespace-separated; middle columns such as POS tags are ignored), a
blank line between sentences, `-DOCSTART-` lines skipped. CoNLL-U (Universal
Dependencies): tab-separated ID, FORM, LEMMA, UPOS, XPOS, ... lines, `#`
comments, multiword-token (1-2) and empty-node (1.1) lines skipped; the UPOS
or XPOS column is the tag. word/TAG text: one sentence per line, tokens
separated by spaces, each split at its last "/" (`1/2/CD` → 1/2, CD).

Example:
    >>> examples = read_conll("conll2003/train.txt")
    >>> examples.tokens[0], examples.tags[0]
    (['EU', 'rejects', ...], ['B-ORG', 'O', ...])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator, Optional

from tfsft.data.readers import DataError, decoded_lines, json_records, load_tfds_split

SCHEMES = ("auto", "iob1", "iob2", "bioes", "none")
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
        scheme: "iob2" (entity tags, converted) or "none" (plain tags, as read).
    """

    tokens: list[list[str]]
    tags: Optional[list[list[str]]]
    lines: list[int]
    source: str
    token_per_line: bool = False
    skipped_empty: int = 0
    label_names: Optional[list[str]] = None
    scheme: str = "iob2"

    def __len__(self) -> int:
        return len(self.tokens)

    def where(self, index: int, token: Optional[int] = None) -> str:
        """`file:line` of sentence `index` (and of its token `token`)."""
        if token is None:
            return f"{self.source}:{self.lines[index]}"
        if self.token_per_line:
            return f"{self.source}:{self.lines[index] + token}"
        return f"{self.source}:{self.lines[index]} (token {token + 1})"


def is_entity_tag(tag: str) -> bool:
    """Whether `tag` belongs to an entity scheme: O, or B-/I-/E-/S-<TYPE>."""
    return tag == "O" or _TAG.match(tag) is not None


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
                            f"{'/'.join(p + '-' for p in allowed)}<TYPE> (plain tags such as part of speech: "
                            "set task.scheme: none)") from None
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
    """Collects sentences, applying the empty policy; at the end, converts entity tags (or keeps plain ones)."""

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
        ex.tokens.append(tokens)
        ex.lines.append(line)
        ex.tags.append(tags)

    def result(self) -> TokenExamples:
        ex = self.examples
        if not ex.tokens:
            raise DataError(f"{ex.source}: no sentences (the source is empty)")
        if self.scheme == "none" or (self.scheme == "auto" and not any(map(is_entity_tag, chain(*ex.tags)))):
            ex.scheme = "none"
        else:
            ex.tags = [to_iob2(tags, self.scheme, lambda j, i=i: ex.where(i, j)) for i, tags in enumerate(ex.tags)]
        return ex


def _blocks(path: Path, is_break: Callable[[str], bool]) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """The runs of lines between break lines: `(first line number, [(line number, text), ...])` each."""
    block: list[tuple[int, str]] = []
    for line, text in decoded_lines(path):
        if not is_break(text):
            block.append((line, text))
        elif block:
            yield block[0][0], block
            block = []
    if block:
        yield block[0][0], block


def read_conll(path: str | Path, *, scheme: str = "auto", max_examples: Optional[int] = None) -> TokenExamples:
    """Reads a CoNLL file: `token [other columns] TAG` per line, blank lines between sentences.

    Args:
        path: the file.
        scheme: the file's tag scheme ("auto", "iob1", "iob2", "bioes").
        max_examples: stop after this many sentences.
    """
    path = Path(path)
    sentences = _Sentences(str(path), scheme, token_per_line=True, max_examples=max_examples)
    docstart_or_blank = lambda text: not text.split() or text.split()[0] == "-DOCSTART-"
    for start, block in _blocks(path, docstart_or_blank):
        tokens, tags = [], []
        for line, text in block:
            fields = text.split()
            if len(fields) < 2:
                raise DataError(f"{path}:{line}: no tag after the token {fields[0]!r}; expected "
                                "`token TAG` (the tag in the last column, separated by whitespace)")
            tokens.append(fields[0])
            tags.append(fields[-1])
        sentences.add(start, tokens, tags)
        if sentences.full:
            break
    return sentences.result()


def read_tagged(path: str | Path, *, scheme: str = "auto", max_examples: Optional[int] = None) -> TokenExamples:
    """Reads word/TAG text: a sentence per line, `word/TAG` tokens split at their last "/"."""
    path = Path(path)
    sentences = _Sentences(str(path), scheme, token_per_line=False, max_examples=max_examples)
    for line, text in decoded_lines(path):
        tokens, tags = [], []
        for j, item in enumerate(text.split()):
            word, slash, tag = item.rpartition("/")
            if not (slash and word and tag):
                raise DataError(f"{path}:{line} (token {j + 1}): {item!r} is not word/TAG")
            tokens.append(word)
            tags.append(tag)
        if tokens:
            sentences.add(line, tokens, tags)
        if sentences.full:
            break
    return sentences.result()


CONLLU_COLUMNS = {"upos": 3, "xpos": 4}


def read_conllu(path: str | Path, *, column: str = "upos", scheme: str = "auto",
                max_examples: Optional[int] = None) -> TokenExamples:
    """Reads CoNLL-U (Universal Dependencies): each word's FORM, tagged with its `column` ("upos" or "xpos")."""
    path = Path(path)
    index = CONLLU_COLUMNS[column]
    sentences = _Sentences(str(path), scheme, token_per_line=False, max_examples=max_examples)
    for _, block in _blocks(path, lambda text: not text.strip()):
        tokens, tags, start = [], [], 0
        for line, text in block:
            if text.startswith("#"):
                continue
            fields = text.rstrip("\r\n").split("\t")
            if len(fields) != 10:
                raise DataError(f"{path}:{line}: {len(fields)} tab-separated fields; CoNLL-U has 10 "
                                "(ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)")
            if "-" in fields[0] or "." in fields[0]:  # a multiword token's surface form, or an empty node
                continue
            if fields[index] == "_":
                raise DataError(f"{path}:{line}: no {column.upper()} tag (\"_\") for {fields[1]!r}; "
                                f"set data.tags_column: {'upos' if column == 'xpos' else 'xpos'}")
            start = start or line
            tokens.append(fields[1])
            tags.append(fields[index])
        if tokens:
            sentences.add(start, tokens, tags)
        if sentences.full:
            break
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


TOKEN_FORMATS = {".txt": "conll", ".conll": "conll", ".iob": "conll", ".bio": "conll", ".conllu": "conllu",
                 ".pos": "tagged", ".jsonl": "jsonl", ".json": "jsonl"}


def read_token_split(data, split: str, scheme: str = "auto") -> TokenExamples:
    """Reads split `split` ("train", "validation", "test") of a `DataConfig` for tagging.

    Files use `data.format` or their suffix (.txt/.conll → CoNLL, .conllu →
    CoNLL-U with `data.tags_column` upos (the default) or xpos, .pos → word/TAG
    text, .jsonl → JSON lines with keys `data.tokens_column`/`data.tags_column`);
    otherwise the `data.tfds` source, whose features are named by the same two keys.
    """
    if data.use_files():
        if split not in data.files:
            raise DataError(f"no data.files.{split} in the config; it has {', '.join(data.files) or 'none'}")
        path = data.file_path(split)
        fmt = data.format or TOKEN_FORMATS.get(path.suffix.lower())
        if fmt == "conll":
            return read_conll(path, scheme=scheme, max_examples=data.max_examples)
        if fmt == "tagged":
            return read_tagged(path, scheme=scheme, max_examples=data.max_examples)
        if fmt == "conllu":
            column = "upos" if data.tags_column == "tags" else data.tags_column
            if column not in CONLLU_COLUMNS:
                raise DataError(f"{path}: data.tags_column for CoNLL-U is upos or xpos. Received: {column!r}")
            return read_conllu(path, column=column, scheme=scheme, max_examples=data.max_examples)
        if fmt == "jsonl":
            return read_token_jsonl(path, tokens_key=data.tokens_column, tags_key=data.tags_column, scheme=scheme,
                                    skip_empty=data.skip_empty, max_examples=data.max_examples)
        raise DataError(f"{path}: token classification reads CoNLL, CoNLL-U, word/TAG text or JSON lines; set "
                        f"data.format to conll, conllu, tagged or jsonl. Received: format={fmt!r}")
    tfds_split = getattr(data.tfds, split, None) if data.tfds else None
    if not tfds_split:
        raise DataError(f"no data.tfds.{split} split in the config")
    return read_token_tfds(data.tfds.name, tfds_split, tokens_key=data.tokens_column, tags_key=data.tags_column,
                           scheme=scheme, data_dir=data.tfds.data_dir, skip_empty=data.skip_empty,
                           max_examples=data.max_examples)
