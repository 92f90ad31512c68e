"""Seeded input perturbations that keep the meaning: casing, typos, punctuation, whitespace.

Each perturbation changes a text (classification) or a list of words (token
classification) and says what it keeps:

- `casing`: each word with letters, with probability `rate`, becomes lower,
  UPPER or Title case (one it is not already). Keeps `text.lower()`.
- `typos`: each word of ≥ 4 letters, with probability `rate`, gets one typo
  away from its first letter: two adjacent letters swapped, or one letter
  deleted (even odds). Keeps the words' count and first letters.
- `punctuation`: every punctuation character (Unicode category P*) removed;
  token classification drops the words left empty, with their tags. Keeps
  every other character, in order.
- `whitespace`: each space between words, with probability `rate`, becomes a
  run of 1–3 of space / tab / newline / double space, and the text (each word,
  for token classification) gets leading and trailing whitespace with
  probability `rate`. Keeps `text.split()`.

Randomness: example i of perturbation p uses `numpy.random.default_rng((seed,
p, i))`, so a result depends only on the seed, the perturbation and the
example's position, not on what else is perturbed.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

import numpy as np

PERTURBATIONS = ("casing", "typos", "punctuation", "whitespace")
_LETTERS = re.compile(r"[^\W\d_]+")
_SPACE = re.compile(r"\s+")
_NOISE = [" ", "  ", "\t", "\n", " \t"]


def rng_for(seed: int, perturbation: str, index: int) -> np.random.Generator:
    """The random stream of example `index` under `perturbation`."""
    return np.random.default_rng((seed, PERTURBATIONS.index(perturbation), index))


def recase(word: str, rng: np.random.Generator) -> str:
    """`word` in lower, UPPER or Title case, chosen among those that change it (unchanged when none does)."""
    options = [form for form in (word.lower(), word.upper(), word[:1].upper() + word[1:].lower()) if form != word]
    return options[rng.integers(len(options))] if options else word


def typo(word: str, rng: np.random.Generator) -> str:
    """One typo past the first letter: swap letters j, j+1 (they differ), or delete letter j ≥ 1."""
    swaps = [j for j in range(1, len(word) - 1) if word[j] != word[j + 1]]
    if swaps and rng.random() < 0.5:
        j = swaps[rng.integers(len(swaps))]
        return word[:j] + word[j + 1] + word[j] + word[j + 2:]
    j = int(rng.integers(1, len(word)))
    return word[:j] + word[j + 1:]


def _is_punctuation(character: str) -> bool:
    return unicodedata.category(character).startswith("P")


def strip_punctuation(text: str) -> str:
    return "".join(c for c in text if not _is_punctuation(c))


def _noise(rng: np.random.Generator) -> str:
    return "".join(_NOISE[rng.integers(len(_NOISE))] for _ in range(rng.integers(1, 4)))


def perturb_text(perturbation: str, text: str, rng: np.random.Generator, rate: float) -> str:
    """`text` under `perturbation` (see the module doc)."""
    if perturbation == "casing":
        return _LETTERS.sub(lambda m: recase(m.group(), rng) if rng.random() < rate else m.group(), text)
    if perturbation == "typos":
        return _LETTERS.sub(lambda m: typo(m.group(), rng) if len(m.group()) >= 4 and rng.random() < rate
                            else m.group(), text)
    if perturbation == "punctuation":
        return strip_punctuation(text)
    if perturbation == "whitespace":
        inner = _SPACE.sub(lambda m: _noise(rng) if rng.random() < rate else m.group(), text)
        return (_noise(rng) if rng.random() < rate else "") + inner + (_noise(rng) if rng.random() < rate else "")
    raise ValueError(f"perturbation must be one of {', '.join(PERTURBATIONS)}. Received: {perturbation!r}")


def perturb_words(perturbation: str, words: list[str], rng: np.random.Generator,
                  rate: float) -> tuple[list[str], list[int]]:
    """`words` under `perturbation`, and the indices of the input words kept (all but emptied ones)."""
    out: list[Optional[str]] = []
    for word in words:
        if perturbation == "punctuation":
            out.append(strip_punctuation(word) or None)
        elif perturbation == "whitespace":
            out.append((_noise(rng) + word + _noise(rng)) if rng.random() < rate else word)
        elif perturbation == "casing":
            out.append(recase(word, rng) if _LETTERS.search(word) and rng.random() < rate else word)
        elif perturbation == "typos":
            letters = _LETTERS.fullmatch(word) is not None and len(word) >= 4
            out.append(typo(word, rng) if letters and rng.random() < rate else word)
        else:
            raise ValueError(f"perturbation must be one of {', '.join(PERTURBATIONS)}. Received: {perturbation!r}")
    kept = [i for i, word in enumerate(out) if word is not None]
    return [out[i] for i in kept], kept
