"""Readers for translation pairs: parallel text files, TSV/JSONL pairs, TFDS.

Every reader returns `TextExamples` with `texts` = source sentences and
`pairs` = their target translations (`labels` is None), so the pair shares the
error reporting (file and line) of `tfsft.data.readers`.

Which reader runs depends on `data.files.<split>`:

* no known suffix (`multi30k/train`): line-aligned text files, one per
  language, named `<path>.<source_language>` and `<path>.<target_language>`
  (`multi30k/train.en`, `multi30k/train.de`);
* `.tsv` / `.csv` / `.jsonl` (or `data.format`): one pair per row, in the
  columns (keys) named by the language codes, e.g. a TSV with header `en	de`;
* no local files: the TFDS dataset `data.tfds.name` (e.g.
  `wmt14_translate/de-en`), whose features are the language codes.

Example:
    >>> pairs = read_parallel_text("multi30k/train.en", "multi30k/train.de")
    >>> pairs.texts[0], pairs.pairs[0]
    ('Two young, White males are outside near many bushes.', 'Zwei junge weiße Männer ...')
"""

from __future__ import annotations

from pathlib import Path

from tfsft.data.readers import (
    DataError,
    TextExamples,
    _Collector,
    decoded_lines,
    read_split,
)


def read_parallel_text(
    source_path: str | Path,
    target_path: str | Path,
    *,
    skip_empty: bool = False,
    max_examples: int | None = None,
) -> TextExamples:
    """Reads two line-aligned files: line i of the target translates line i of the source.

    Args:
        source_path: one source sentence per line (UTF-8).
        target_path: one target sentence per line, aligned with the source.
        skip_empty: skip (and count) pairs where either side is empty,
            instead of raising.
        max_examples: read at most this many pairs.

    Raises:
        DataError: a missing file, non-UTF-8 bytes (file:line), an empty line
            (file:line) unless `skip_empty`, or files with different numbers
            of lines (both files and both counts are named).
    """
    source_path, target_path = Path(source_path), Path(target_path)
    sources = list(decoded_lines(source_path))
    targets = list(decoded_lines(target_path))
    if len(sources) != len(targets):
        raise DataError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}; "
            "parallel files must be line-aligned (line i of one translates line i of the other)"
        )
    collector = _Collector(str(source_path), True, False, skip_empty)  # line numbers are shared by both files
    for (line, source), (_, target) in zip(sources, targets):
        collector.add(line, source.rstrip("\r\n"), target.rstrip("\r\n"))
        if max_examples and len(collector.texts) >= max_examples:
            break
    return collector.result()


def language_codes(data) -> tuple[str, str]:
    """`(source_language, target_language)` of a `DataConfig`, required here."""
    if not data.source_language or not data.target_language:
        raise DataError(
            "translation needs data.source_language and data.target_language (e.g. en and de). "
            f"Received: source_language={data.source_language!r}, target_language={data.target_language!r}"
        )
    return data.source_language, data.target_language


def read_translation_split(data, split: str) -> TextExamples:
    """Reads split `split` ("train", "validation", "test") of a translation `DataConfig`."""
    source, target = language_codes(data)

    def parallel_files(path: Path) -> TextExamples:
        return read_parallel_text(path.with_name(f"{path.name}.{source}"), path.with_name(f"{path.name}.{target}"),
                                  skip_empty=data.skip_empty)  # read_split applies data.max_examples

    columns = {"text_column": source, "text_pair_column": target, "label_column": None}
    return read_split(data, split, columns=columns, read_suffixless=parallel_files)
