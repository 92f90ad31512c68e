"""Start/end logits of all windows → the n best answers of each question, in-graph.

A span (i, j) of one window scores s_i + e_j (start plus end logit, BERT's
ranking) and is a candidate when i and j are context subwords of the window,
i ≤ j < i + `max_answer_length` and the window owns subword i (so each span is
proposed once, by the window where its start has the most context). Each
window's `n_best` best candidates are pooled per question and the `n_best`
best of the pool kept.

The null answer (SQuAD v2) scores s_[CLS] + e_[CLS], the lowest over the
question's windows (BERT). With `null_answers`, a question gets no answer when
null score − best span score > `null_threshold`; without, only when no span is
possible (an empty context).

These are TensorFlow ops: they run in the SavedModel and in evaluation.
"""

from __future__ import annotations

import tensorflow as tf

NO_ANSWER = -1  # answer_start / answer_end (and padded candidate offsets) of no answer


def best_spans(logits, encoded: dict, num_questions, n_best: int, max_answer_length: int) -> dict:
    """The n best spans of each question over all its windows.

    Args:
        logits: (NW, L, 2) float32 start and end logits.
        encoded: the `QuestionContextEncoder` output for the same windows.
        num_questions: B.

    Returns:
        `candidate_scores` (B, K) float32 (-inf past the count), `candidate_starts`,
        `candidate_ends` (B, K) int64 byte offsets in the context (end exclusive;
        -1 past the count), `candidate_count` (B,) int32 and `null_score` (B,)
        float32; K = min(n_best, candidates of the question with the most windows).
    """
    start_logits, end_logits = logits[..., 0], logits[..., 1]  # (NW, L)
    context = encoded["token_start"] >= 0
    length = tf.shape(start_logits)[1]
    end_position = tf.range(length)[:, None] + tf.range(max_answer_length)[None, :]  # (L, A): j = i + a
    in_range = end_position < length
    end_position = tf.minimum(end_position, length - 1)
    valid = ((context & encoded["token_owner"])[:, :, None]
             & tf.gather(context, end_position, axis=1) & in_range)  # (NW, L, A)
    scores = start_logits[:, :, None] + tf.gather(end_logits, end_position, axis=1)
    scores = tf.reshape(tf.where(valid, scores, -float("inf")), [tf.shape(scores)[0], -1])  # (NW, L·A)

    top, index = tf.math.top_k(scores, tf.minimum(n_best, tf.shape(scores)[1]))  # (NW, k)
    start = index // max_answer_length
    end = tf.minimum(start + index % max_answer_length, length - 1)  # clipped where a pick is invalid
    starts = tf.gather(encoded["token_start"], start, batch_dims=1)
    ends = tf.gather(encoded["token_end"], end, batch_dims=1)

    row = tf.repeat(encoded["window_row"], tf.shape(top)[1])  # the question of each pooled candidate

    def per_question(values, pad):  # (NW, k) → (B, max windows · k)
        return tf.RaggedTensor.from_value_rowids(tf.reshape(values, [-1]), row, nrows=num_questions).to_tensor(pad)

    pooled = per_question(top, -float("inf"))
    best, pick = tf.math.top_k(pooled, tf.minimum(n_best, tf.shape(pooled)[1]))  # (B, K)
    found = best > -float("inf")
    null = start_logits[:, 0] + end_logits[:, 0]
    return {
        "candidate_scores": best,
        "candidate_starts": tf.where(found, tf.gather(per_question(starts, NO_ANSWER), pick, batch_dims=1), NO_ANSWER),
        "candidate_ends": tf.where(found, tf.gather(per_question(ends, NO_ANSWER), pick, batch_dims=1), NO_ANSWER),
        "candidate_count": tf.reduce_sum(tf.cast(found, tf.int32), axis=1),
        "null_score": tf.math.unsorted_segment_min(null, encoded["window_row"], num_questions),
    }


def answer_outputs(context, spans: dict, null_answers: bool, null_threshold: float) -> dict:
    """The chosen answer and the candidates as texts with character offsets.

    Args:
        context: string (B,), the contexts the spans point into.
        spans: `best_spans(...)`.

    Returns:
        `answer` (B,) string ("" for no answer), `answer_start`, `answer_end`
        (B,) int32 character offsets (end exclusive, so in Python
        `context[answer_start:answer_end] == answer`; -1 for no answer),
        `score` (B,) float32 (the span's s_i + e_j, or the null score for no
        answer), `null_score` (B,), `candidate_count` (B,) int32 and the n-best
        list `candidate_texts`, `candidate_starts`, `candidate_ends`,
        `candidate_scores` (B, K), valid up to `candidate_count`.
    """
    count = spans["candidate_count"]
    best_score = spans["candidate_scores"][:, 0]
    answered = count > 0
    if null_answers:
        answered &= spans["null_score"] - best_score <= null_threshold
    answer_bytes = [tf.where(answered, spans[key][:, 0], NO_ANSWER) for key in ("candidate_starts", "candidate_ends")]
    candidates = tf.broadcast_to(context[:, None], tf.shape(spans["candidate_starts"]))
    listed = tf.range(tf.shape(spans["candidate_scores"])[1])[None, :] < count[:, None]
    return {
        "answer": _text(context, *answer_bytes),
        "answer_start": _characters(context, answer_bytes[0]),
        "answer_end": _characters(context, answer_bytes[1]),
        "score": tf.where(answered, best_score, spans["null_score"]),
        "null_score": spans["null_score"],
        "candidate_count": count,
        "candidate_texts": _text(candidates, spans["candidate_starts"], spans["candidate_ends"]),
        "candidate_starts": _characters(candidates, spans["candidate_starts"]),
        "candidate_ends": _characters(candidates, spans["candidate_ends"]),
        "candidate_scores": tf.where(listed, spans["candidate_scores"], 0.0),
    }


def _text(context, start, end):
    """context[start:end] in bytes; "" where start is `NO_ANSWER`."""
    start = tf.cast(start, tf.int64)
    present = start >= 0
    start = tf.where(present, start, 0)
    return tf.strings.substr(context, start, tf.where(present, tf.cast(end, tf.int64) - start, 0))


def _characters(context, byte_offset):
    """Byte offsets → code-point offsets (int32), `NO_ANSWER` kept."""
    byte_offset = tf.cast(byte_offset, tf.int64)
    prefix = tf.strings.substr(context, tf.zeros_like(byte_offset), tf.maximum(byte_offset, 0))
    return tf.where(byte_offset >= 0, tf.strings.length(prefix, unit="UTF8_CHAR"), NO_ANSWER)
