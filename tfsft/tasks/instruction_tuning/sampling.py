"""Token generation with a key/value cache for KerasHub causal LMs, in TF ops.

Works with any KerasHub `CausalLM` that has `call_with_cache` (Llama family,
GPT-2), built with `preprocessor=None`. Everything is TF ops and one
`tf.while_loop`, so it runs inside a `tf.function` and an exported SavedModel.

Layout (KerasHub's own `generate` scheme): prompts are right-padded, so every
row keeps its true positions 0 … n_r - 1 and RoPE (Llama) or learned position
embeddings (GPT-2) see the positions of training; the causal mask alone hides
the padding (position i attends to 0 … i, all real tokens of its row).

1. Prefill: one `call_with_cache` over the (B, P) prompts fills cache
   positions 0 … P-1; the cache is (B, layers, 2, P + N - 1, kv_heads,
   head_dim) (the last new token is never fed back).
2. Steps t = m-1, m, … (m = shortest prompt): feed the token at position t
   (one `call_with_cache` at index t), choose the token at t + 1. A row whose
   prompt is longer than t + 1 takes its own prompt token instead (which
   rewrites identical cache entries), so a batch of mixed lengths costs up
   to P - m extra one-token steps; batch 1 costs none.
3. A row stops after N = `max_new_tokens` tokens or at one of
   `end_token_ids` (kept in its output); finished rows emit `pad_id`.

Keras' TensorFlow `ops.slice_update`, with which KerasHub writes the cache,
is XLA's `XlaDynamicUpdateSlice` op, which TF Serving lacks; generation traces
the model with the core op `TensorStridedSliceUpdate` in its place
(`core_slice_update`).

Prompts longer than `max_length - N` tokens are cut from the left (the end of
a prompt is where the answer starts) and flagged in `truncated`.

Choosing a token from logits z (B, V): temperature T = 0 → argmax z;
otherwise z / T, keep the `top_k` largest (0 = all), keep the smallest prefix
of those (by probability) whose mass reaches `top_p`, and draw with
`tf.random.stateless_categorical` seeded by (seed, t): the same seed and
inputs give the same tokens.

Example:
    >>> out = generate_tokens(causal_lm, tf.ragged.constant([[1, 5, 9], [1, 4]]),
    ...                       max_new_tokens=16, end_token_ids=[2])
    >>> out.token_ids  # (2, 16) int32; out.lengths (2,): tokens made, end token included
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import tensorflow as tf
from keras.src.backend.tensorflow import core as keras_tf_core


class Generated(NamedTuple):
    """`token_ids` (B, N) int32 new tokens, `pad_id` after each row's `lengths` (B,) int32
    (an end token counts); `truncated` (B,) bool: the prompt was cut from the left."""

    token_ids: tf.Tensor
    lengths: tf.Tensor
    truncated: tf.Tensor


def next_token(logits, temperature, top_k, top_p, seed):
    """(B, V) logits → (B,) int32 tokens: argmax when `temperature` is 0, else a seeded sample.

    Args:
        logits: (B, V) float scores.
        temperature: scalar ≥ 0; top_k: scalar int ≥ 0 (0 = no limit);
        top_p: scalar in (0, 1]; seed: (2,) int64 for `stateless_categorical`.
    """
    logits = tf.cast(logits, tf.float32)

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def sample():
        vocabulary = tf.shape(logits)[-1]
        k = tf.where(top_k > 0, tf.minimum(top_k, vocabulary), vocabulary)
        values, indices = tf.math.top_k(logits / temperature, k=k)  # (B, k), largest first
        mass_before = tf.math.cumsum(tf.nn.softmax(values), axis=-1, exclusive=True)
        values = tf.where(mass_before < top_p, values, float("-inf"))  # the first token always stays
        choice = tf.random.stateless_categorical(values, 1, seed, dtype=tf.int32)[:, 0]  # (B,)
        return tf.gather(indices, choice, batch_dims=1)

    return tf.cond(temperature > 0, sample, greedy)


def empty_cache(model, batch, length):
    """Zeros (batch, layers, 2, length, kv_heads, head_dim) in the model's compute dtype."""
    backbone = model.backbone
    kv_heads = getattr(backbone, "num_key_value_heads", None) or backbone.num_heads
    query_heads = getattr(backbone, "num_query_heads", None) or backbone.num_heads
    head_dim = getattr(backbone, "head_dim", None) or backbone.hidden_dim // query_heads
    return tf.zeros([batch, backbone.num_layers, 2, length, kv_heads, head_dim], model.compute_dtype)


def strided_slice_update(inputs, start_indices, updates):
    """inputs[start : start + shape(updates)] = updates, with TensorFlow's core `TensorStridedSliceUpdate` op."""
    inputs = tf.convert_to_tensor(inputs)
    begin = tf.stack([tf.cast(i, tf.int32) for i in start_indices])
    end = begin + tf.shape(updates, out_type=tf.int32)
    return tf.raw_ops.TensorStridedSliceUpdate(input=inputs, begin=begin, end=end, strides=tf.ones_like(begin),
                                              value=tf.cast(updates, inputs.dtype))


@contextlib.contextmanager
def core_slice_update():
    """Within: Keras' `ops.slice_update` (TensorFlow backend) is `strided_slice_update`."""
    original = keras_tf_core.slice_update
    keras_tf_core.slice_update = strided_slice_update
    try:
        yield
    finally:
        keras_tf_core.slice_update = original


def keep_last(ids: tf.RaggedTensor, count):
    """The last `count` tokens of each row of (B, None) ids, and (B,) whether a row was cut."""
    lengths = ids.row_lengths()
    count = tf.cast(count, lengths.dtype)
    positions = tf.ragged.range(lengths)
    return tf.ragged.boolean_mask(ids, positions >= tf.expand_dims(lengths - count, 1)), lengths > count


def _checked(max_new_tokens, max_length, temperature, top_k, top_p):
    """`max_new_tokens` after the argument checks (so that nothing runs on bad arguments in a graph)."""
    checks = [
        tf.debugging.assert_positive(max_new_tokens, message="max_new_tokens must be >= 1"),
        tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0 (0 = greedy)"),
        tf.debugging.assert_non_negative(top_k, message="top_k must be >= 0 (0 = no limit)"),
        tf.debugging.assert_positive(top_p, message="top_p must be in (0, 1]"),
        tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]"),
    ]
    if max_length is not None:
        checks.append(tf.debugging.assert_less(max_new_tokens, max_length,
                                               message="max_new_tokens must be < max_length"))
    with tf.control_dependencies(checks):
        return tf.identity(max_new_tokens)


def generate_tokens(model, prompt_ids, max_new_tokens, *, end_token_ids=(), temperature=0.0,
                    top_k=0, top_p=1.0, seed=0, pad_id: int = 0, max_length=None) -> Generated:
    """Continues each prompt by up to `max_new_tokens` tokens (see the module doc).

    Args:
        model: a KerasHub `CausalLM` with `call_with_cache` (preprocessor may be None).
        prompt_ids: (B, None) int ragged prompt tokens, at least one per row.
        max_new_tokens: N, scalar int ≥ 1 (may be a tensor).
        end_token_ids: ids that end a row (e.g. `<|im_end|>`, `<|endoftext|>`),
            a list or a 1-D int tensor.
        temperature, top_k, top_p, seed: how tokens are chosen (`next_token`).
        pad_id: filler after a row's end.
        max_length: most positions (prompt + new tokens) the model takes, e.g.
            GPT-2's `max_sequence_length`; None = no limit.

    Returns:
        `Generated(token_ids (B, N), lengths (B,), truncated (B,))`.
    """
    max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, tf.float32)
    seed = tf.cast(seed, tf.int64)
    end_ids = tf.reshape(tf.convert_to_tensor(end_token_ids, tf.int32), [-1])
    max_new_tokens = _checked(max_new_tokens, max_length, temperature, top_k, top_p)
    if not isinstance(prompt_ids, tf.RaggedTensor):
        prompt_ids = tf.ragged.constant(prompt_ids)
    ids = tf.cast(prompt_ids, tf.int32)
    if max_length is None:
        truncated = tf.zeros_like(ids.row_lengths(), tf.bool)
    else:
        ids, truncated = keep_last(ids, max_length - max_new_tokens)
    lengths = tf.cast(ids.row_lengths(), tf.int32)  # (B,)
    with tf.control_dependencies([tf.debugging.assert_positive(lengths, message="every prompt needs >= 1 token")]):
        lengths = tf.identity(lengths)
    prompt = ids.to_tensor(pad_id)  # (B, P) right-padded
    batch, prompt_width = tf.shape(prompt)[0], tf.shape(prompt)[1]
    cache = empty_cache(model, batch, prompt_width + max_new_tokens - 1)
    with core_slice_update():
        _, _, cache = model.call_with_cache(prompt, cache, 0)  # prefill (its logits are pruned from the graph)
    start = tf.reduce_min(lengths) - 1

    def body(t, token, cache, out, counts, done):
        with core_slice_update():
            logits, _, cache = model.call_with_cache(token[:, None], cache, t)  # (B, 1, V) scores of position t + 1
        chosen = next_token(logits[:, 0, :], temperature, top_k, top_p, tf.stack([seed, tf.cast(t, tf.int64)]))
        in_prompt = t + 1 < lengths
        active = tf.logical_and(tf.logical_not(in_prompt), tf.logical_not(done))
        prompt_token = tf.gather(prompt, tf.minimum(t + 1, prompt_width - 1), axis=1)
        token = tf.where(in_prompt, prompt_token, tf.where(active, chosen, pad_id))
        at_count = tf.one_hot(counts, max_new_tokens, on_value=True, off_value=False)  # (B, N)
        out = tf.where(tf.logical_and(at_count, active[:, None]), token[:, None], out)
        counts += tf.cast(active, tf.int32)
        is_end = tf.reduce_any(tf.equal(token[:, None], end_ids[None, :]), axis=1)
        stop = tf.logical_or(is_end, counts >= max_new_tokens)
        return t + 1, token, cache, out, counts, tf.logical_or(done, tf.logical_and(active, stop))

    out = tf.fill([batch, max_new_tokens], tf.constant(pad_id, tf.int32))
    state = (start, tf.gather(prompt, start, axis=1), cache, out, tf.zeros([batch], tf.int32),
             tf.zeros([batch], tf.bool))
    _, _, _, out, counts, _ = tf.while_loop(lambda *s: tf.logical_not(tf.reduce_all(s[-1])), body, state)
    return Generated(out, counts, truncated)
