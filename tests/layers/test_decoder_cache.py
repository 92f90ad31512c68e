"""The decoder's key/value cache: cached steps against re-decoding the whole prefix."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsft.layers import TransformerDecoder
from tfsft.layers import TransformerSeq2SeqBackbone
from tfsft.tasks.translation.search import beam_search, greedy_search
from tfsft.tasks.translation.task import TransformerTranslator, decoding_inputs

VOCAB = 40
PAD, END, START = 0, 1, 2
SOURCE = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0], [11, 1, 0, 0, 0]], np.int32)  # padded rows 2 and 3


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _backbone(norm_first=True, position_embedding="sinusoidal", dropout=0.1, num_layers=2, dtype="float32"):
    # dropout > 0: the cached path must switch it off, as `decode(training=False)` does.
    return TransformerSeq2SeqBackbone(vocabulary_size=VOCAB, num_layers=num_layers, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=32, dropout=dropout,
                                      norm_first=norm_first, position_embedding=position_embedding, dtype=dtype)


def _source(padded):
    ids = SOURCE if padded else np.where(SOURCE == 0, 12, SOURCE)
    return ids, (ids != 0).astype("int32")


def redecoding_inputs(model, token_ids, padding_mask, max_length):
    """The step the library had before the cache: the whole prefix through `backbone.decode` every step."""
    backbone = model.backbone
    state = {"memory": backbone.encode(token_ids, padding_mask), "mask": padding_mask}

    def step(tokens, t, state):
        hidden = backbone.decode(tokens[:, :t + 1], state["memory"], state["mask"])  # (N, t+1, D)
        return backbone.token_embedding(hidden[:, -1, :], reverse=True), state  # (N, V)

    return state, step


@pytest.mark.parametrize("padded", [False, True], ids=["no_padding", "padded_source"])
@pytest.mark.parametrize("position_embedding", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_cached_step_logits_equal_redecoding_the_prefix_at_every_position(norm_first, position_embedding, padded):
    backbone = _backbone(norm_first, position_embedding)
    ids, mask = _source(padded)
    target = np.random.default_rng(0).integers(3, VOCAB, size=(len(ids), 8)).astype("int32")
    target[:, 0] = START
    memory = backbone.encode(ids, mask)
    self_cache, cross_cache = backbone.decoder_cache(memory, target.shape[1] + 1)
    for t in range(target.shape[1]):
        hidden, self_cache = backbone.decode_step(target[:, t:t + 1], t, self_cache, cross_cache, mask)
        assert hidden.shape == (len(ids), 1, 16)
        full = backbone.decode(target[:, :t + 1], memory, mask)  # (B, t+1, D)
        np.testing.assert_allclose(_np(backbone.token_embedding(hidden[:, 0], reverse=True)),
                                   _np(backbone.token_embedding(full[:, -1], reverse=True)), atol=1e-5)


def test_cross_attention_keys_and_values_are_the_projected_encoder_output_for_every_layer():
    backbone = _backbone(num_layers=3)
    ids, mask = _source(True)
    memory = backbone.encode(ids, mask)
    self_cache, cross_cache = backbone.decoder_cache(memory, 7)
    assert len(self_cache) == len(cross_cache) == 3
    for layer, (key, value), (self_key, self_value) in zip(backbone.decoder.decoder_layers, cross_cache, self_cache):
        assert key.shape == value.shape == (3, 2, ids.shape[1], 8)  # (B, h, T_e, d_k)
        assert self_key.shape == self_value.shape == (3, 2, 7, 8)  # (B, h, S, d_k)
        assert not np.any(_np(self_key)) and not np.any(_np(self_value))
        expected = _np(layer.cross_attention.key_dense(memory)).reshape(3, ids.shape[1], 2, 8).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(_np(key), expected, atol=1e-6)


def test_each_step_writes_only_its_own_cache_position():
    backbone = _backbone()
    ids, mask = _source(True)
    memory = backbone.encode(ids, mask)
    self_cache, cross_cache = backbone.decoder_cache(memory, 6)
    before = [_np(x) for pair in self_cache for x in pair]
    _, self_cache = backbone.decode_step(np.full((3, 1), START, np.int32), 2, self_cache, cross_cache, mask)
    for old, new in zip(before, (_np(x) for pair in self_cache for x in pair)):
        changed = np.any(old != new, axis=(0, 1, 3))  # (S,)
        assert changed.tolist() == [False, False, True, False, False, False]


def test_decoder_only_stack_caches_match_the_causal_call():
    decoder = TransformerDecoder(num_layers=2, num_heads=2, intermediate_dim=32, dropout=0.1, norm_first=False)
    x = np.random.default_rng(1).normal(size=(2, 5, 16)).astype("float32")
    full = _np(decoder(x))  # built without cross-attention
    self_cache, cross_cache = decoder.initial_cache(2, 5)
    assert cross_cache is None
    for t in range(5):
        out, self_cache = decoder.call_with_cache(x[:, t:t + 1], self_cache, t)
        np.testing.assert_allclose(_np(out)[:, 0], full[:, t], atol=1e-5)


def test_cached_steps_run_in_mixed_bfloat16(mixed_bfloat16):
    backbone = _backbone(dtype="mixed_bfloat16")
    ids, mask = _source(True)
    memory = backbone.encode(ids, mask)
    self_cache, cross_cache = backbone.decoder_cache(memory, 4)
    assert self_cache[0][0].dtype == cross_cache[0][0].dtype == "bfloat16"
    tokens = np.full((3, 1), START, np.int32)
    for t in range(3):
        hidden, self_cache = backbone.decode_step(tokens, t, self_cache, cross_cache, mask)
    full = backbone.decode(np.full((3, 3), START, np.int32), memory, mask)
    np.testing.assert_allclose(_np(hidden[:, 0]).astype("float32"), _np(full[:, -1]).astype("float32"), atol=0.1)


@pytest.fixture(scope="module")
def tiny_translator():
    keras.utils.set_random_seed(3)
    return TransformerTranslator(_backbone(norm_first=True, dropout=0.0, num_layers=2))


def _search(model, inputs_fn, beam_size, alpha=0.6, max_length=12):
    ids, mask = _source(True)

    @tf.function
    def run():
        state, step = inputs_fn(model, tf.constant(ids), tf.constant(mask), max_length)
        common = {"start_id": START, "end_id": END, "pad_id": PAD, "max_length": max_length}
        if beam_size == 0:
            return greedy_search(step, state, len(ids), **common)
        return beam_search(step, state, len(ids), beam_size=beam_size, length_penalty_alpha=alpha, **common)

    return [x.numpy() for x in run()]


@pytest.mark.parametrize("beam_size", [0, 4], ids=["greedy", "beam_4"])
def test_searches_through_the_cache_find_what_redecoding_finds(tiny_translator, beam_size):
    cached = _search(tiny_translator, decoding_inputs, beam_size)
    redecoded = _search(tiny_translator, redecoding_inputs, beam_size)
    np.testing.assert_array_equal(cached[0], redecoded[0])  # tokens
    for fast, slow in zip(cached[1:], redecoded[1:]):  # scores (and normalised scores), lengths
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_cached_beam_search_traces_with_an_unknown_batch_size_and_no_xla_ops(tiny_translator):
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def translate(ids, mask):
        state, step = decoding_inputs(tiny_translator, ids, mask, 10)
        tokens, _, normalized, _ = beam_search(step, state, tf.shape(ids)[0], start_id=START, end_id=END,
                                               pad_id=PAD, beam_size=4, max_length=10)
        return tokens, normalized

    graph = translate.get_concrete_function().graph.as_graph_def()
    ops_used = {node.op for node in graph.node}
    ops_used |= {node.op for function in graph.library.function for node in function.node_def}
    assert "While" in ops_used or "StatelessWhile" in ops_used
    assert not any(op.startswith("Xla") for op in ops_used), sorted(op for op in ops_used if op.startswith("Xla"))
    ids, mask = _source(True)
    for rows in (1, 3):
        tokens, normalized = translate(tf.constant(ids[:rows]), tf.constant(mask[:rows]))
        assert tokens.shape[0] == normalized.shape[0] == rows
    assert translate.experimental_get_tracing_count() == 1
    expected_tokens, _, expected_normalized, _ = _search(tiny_translator, redecoding_inputs, 4, max_length=10)
    np.testing.assert_array_equal(tokens.numpy(), expected_tokens)
    np.testing.assert_allclose(normalized.numpy(), expected_normalized, rtol=1e-5, atol=1e-5)
