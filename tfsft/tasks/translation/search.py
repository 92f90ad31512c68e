"""Greedy and beam search for encoder–decoder models, in TF ops.

Both searches are `tf.while_loop`s over a fixed token buffer, so they run
inside a `tf.function` and therefore inside the exported SavedModel. The model
is reached only through a *step function*::

    logits, state = step_fn(tokens, t, state)
    # tokens: (N, max_length + 1) int32, column 0 = start id, columns 1..t
    #         hold the tokens generated so far (pad beyond);
    # t:      scalar int32, the position whose successor is predicted;
    # state:  a nest of tensors with leading dimension N (encoder output,
    #         padding mask, key/value caches, ...);
    # logits: (N, V) scores of token t + 1.

so the same search serves a model with a key/value cache (the from-scratch
Transformer and KerasHub T5, see `task.decoding_inputs`: one decoder position
a step) and one that re-decodes the whole prefix each step (step t costs O(t)
decoder positions, O(T²) per sentence).
Beam search tiles `state` `beam_size` times and reorders it with the beams.

Beam search ranks hypotheses by the GNMT length-normalised score (Wu et al.,
2016, eq. 14, without the coverage term):

    score(Y) = log P(Y | X) / lp(Y),   lp(Y) = ((5 + |Y|) / 6) ** α

where |Y| counts the generated tokens including the end token. A finished
hypothesis stays in the beam (extended by pad at no cost) and competes with
the live ones; the search stops when every hypothesis in every beam has ended
or after `max_length` tokens.

Example:
    >>> tokens, score, normalized, length = beam_search(
    ...     step_fn, state, batch_size=2, start_id=3, end_id=1, pad_id=0,
    ...     beam_size=4, max_length=50, length_penalty=0.6)
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = -1e9  # "impossible" log-probability; finite so that -inf - -inf never makes NaN


def length_penalty(length, alpha: float):
    """GNMT length penalty lp = ((5 + length) / 6) ** alpha (1 when alpha = 0)."""
    return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def _log_probs(logits, pad_id: int):
    """(N, V) logits → float32 log-probabilities with pad forbidden."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    is_pad = tf.one_hot(pad_id, tf.shape(log_probs)[-1], on_value=True, off_value=False)
    return tf.where(is_pad, NEG_INF, log_probs)


def _write_column(tokens, column, values):
    """tokens[:, column] = values, for a (N, L) buffer and (N,) values."""
    is_column = tf.one_hot(column, tf.shape(tokens)[1], on_value=True, off_value=False)  # (L,)
    return tf.where(is_column[None, :], values[:, None], tokens)


def _start_buffer(rows, start_id: int, pad_id: int, max_length):
    return tf.concat([tf.fill([rows, 1], start_id), tf.fill([rows, max_length], pad_id)], axis=1)  # (N, L + 1)


def greedy_search(step_fn, state, batch_size, *, start_id: int, end_id: int, pad_id: int, max_length):
    """Picks the most probable next token at each step.

    Args:
        step_fn: `(tokens, t, state) -> (logits, state)`, see the module doc.
        state: nest of tensors with leading dimension `batch_size`.
        batch_size: B, scalar (may be a tensor).
        start_id, end_id, pad_id: special token ids.
        max_length: most tokens generated per sentence (end token included).

    Returns:
        `(tokens, score, length)`: tokens (B, T) int32 without the start token,
        pad after the end token, T ≤ max_length; score (B,) float32 sum of the
        log-probabilities of the generated tokens; length (B,) int32 tokens
        generated including the end token.
    """
    tokens = _start_buffer(batch_size, start_id, pad_id, max_length)
    finished = tf.zeros([batch_size], tf.bool)
    score = tf.zeros([batch_size], tf.float32)
    length = tf.zeros([batch_size], tf.int32)

    def cond(t, tokens, state, finished, score, length):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, state, finished, score, length):
        logits, state = step_fn(tokens, t, state)
        log_probs = _log_probs(logits, pad_id)  # (B, V)
        token = tf.argmax(log_probs, axis=-1, output_type=tf.int32)  # (B,)
        token = tf.where(finished, pad_id, token)
        score += tf.where(finished, 0.0, tf.reduce_max(log_probs, axis=-1))
        length += tf.cast(tf.logical_not(finished), tf.int32)
        finished = tf.logical_or(finished, tf.equal(token, end_id))
        return t + 1, _write_column(tokens, t + 1, token), state, finished, score, length

    t, tokens, _, _, score, length = tf.while_loop(
        cond, body, (tf.constant(0), tokens, state, finished, score, length)
    )
    return tokens[:, 1:t + 1], score, length


def beam_search(step_fn, state, batch_size, *, start_id: int, end_id: int, pad_id: int, beam_size: int,
                max_length, length_penalty_alpha: float = 0.6):
    """Keeps the `beam_size` best hypotheses (by normalised score) per sentence.

    With `beam_size=1` this is exactly `greedy_search` (for any α: all live
    candidates share one length, so normalising does not change their order).

    Args:
        step_fn: `(tokens, t, state) -> (logits, state)`, see the module doc.
        state: nest of tensors with leading dimension `batch_size` (tiled to
            `batch_size * beam_size` here).
        batch_size: B, scalar (may be a tensor).
        start_id, end_id, pad_id: special token ids.
        beam_size: K hypotheses kept per sentence.
        max_length: most tokens generated per sentence (end token included).
        length_penalty_alpha: α of the GNMT length penalty; 0 ranks by the
            plain log-probability.

    Returns:
        `(tokens, score, normalized_score, length)` of the best hypothesis per
        sentence: tokens (B, T) int32 (no start token, pad after the end);
        score (B,) log P(Y | X); normalized_score (B,) score / lp(length);
        length (B,) generated tokens including the end token.
    """
    K = beam_size
    rows = batch_size * K  # N = B·K hypotheses, beam-major within a sentence
    state = tf.nest.map_structure(lambda x: tf.repeat(x, K, axis=0), state)
    tokens = _start_buffer(rows, start_id, pad_id, max_length)  # (N, L + 1)
    first_beam_only = tf.one_hot(0, K, on_value=0.0, off_value=NEG_INF)  # identical beams: keep one
    score = tf.tile(first_beam_only[None, :], [batch_size, 1])  # (B, K)
    finished = tf.zeros([batch_size, K], tf.bool)
    length = tf.zeros([batch_size, K], tf.int32)

    def cond(t, tokens, state, score, finished, length):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, state, score, finished, length):
        logits, state = step_fn(tokens, t, state)
        log_probs = _log_probs(logits, pad_id)  # (N, V)
        vocabulary = tf.shape(log_probs)[-1]
        log_probs = tf.reshape(log_probs, [batch_size, K, vocabulary])  # (B, K, V)
        # A finished hypothesis continues only with pad, at no cost.
        pad_only = tf.one_hot(pad_id, vocabulary, on_value=0.0, off_value=NEG_INF)  # (V,)
        log_probs = tf.where(finished[..., None], pad_only, log_probs)
        candidate = score[..., None] + log_probs  # (B, K, V)
        candidate_length = tf.where(finished, length, t + 1)  # (B, K)
        normalized = candidate / length_penalty(candidate_length, length_penalty_alpha)[..., None]
        _, index = tf.math.top_k(tf.reshape(normalized, [batch_size, K * vocabulary]), k=K)  # (B, K)
        parent, token = index // vocabulary, index % vocabulary  # (B, K)
        score = tf.gather(tf.reshape(candidate, [batch_size, K * vocabulary]), index, batch_dims=1)
        was_finished = tf.gather(finished, parent, batch_dims=1)
        length = tf.where(was_finished, tf.gather(length, parent, batch_dims=1), t + 1)
        token = tf.where(was_finished, pad_id, token)
        finished = tf.logical_or(was_finished, tf.equal(token, end_id))
        rows_of_parent = tf.reshape(parent + tf.range(batch_size)[:, None] * K, [-1])  # (N,)
        tokens = tf.gather(tokens, rows_of_parent)
        state = tf.nest.map_structure(lambda x: tf.gather(x, rows_of_parent), state)
        tokens = _write_column(tokens, t + 1, tf.reshape(token, [-1]))
        return t + 1, tokens, state, score, finished, length

    t, tokens, _, score, _, length = tf.while_loop(
        cond, body, (tf.constant(0), tokens, state, score, finished, length)
    )
    normalized = score / length_penalty(length, length_penalty_alpha)  # (B, K)
    best = tf.argmax(normalized, axis=1, output_type=tf.int32)  # (B,)
    best_rows = tf.range(batch_size) * K + best
    score, normalized, length = (tf.gather(x, best, batch_dims=1) for x in (score, normalized, length))
    return tf.gather(tokens, best_rows)[:, 1:t + 1], score, normalized, length
