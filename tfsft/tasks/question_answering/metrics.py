"""The official SQuAD metrics: exact match and token F1, best over the gold answers.

As in the official evaluation script (v2.0, which gives the v1.1 figures on
v1.1 data): answers are normalized (lower case, punctuation removed, the
articles a/an/the removed, whitespace collapsed); EM = [norm(pred) ==
norm(gold)]; F1 over the bags of normalized tokens, F1 = 2PR / (P + R) with
P = |common| / |pred|, R = |common| / |gold| (1 if both are empty, 0 if one
is). Gold answers that normalize to nothing are dropped; a question left with
none (unanswerable, SQuAD v2) has the single gold answer "". Each question
scores its best gold answer; the figures are means over questions, in [0, 1]
(the official script prints them × 100).
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction against its best gold answer."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def squad_metrics(predictions: list[str], golds: list[list[str]]) -> dict:
    """`exact_match` and `f1` over all questions; with unanswerable questions also
    `has_answer_*` and `no_answer_*` (and their counts), as the v2.0 script reports."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    scores = [squad_scores(p, g) for p, g in zip(predictions, golds)]
    answerable = [any(normalize_answer(g) for g in gold) for gold in golds]

    def summary(keep, prefix=""):
        chosen = [s for s, k in zip(scores, keep) if k]
        return {f"{prefix}examples": len(chosen),
                f"{prefix}exact_match": sum(s[0] for s in chosen) / max(len(chosen), 1),
                f"{prefix}f1": sum(s[1] for s in chosen) / max(len(chosen), 1)}

    metrics = summary([True] * len(scores))
    if not all(answerable):
        metrics.update(summary(answerable, "has_answer_"))
        metrics.update(summary([not a for a in answerable], "no_answer_"))
    return metrics
