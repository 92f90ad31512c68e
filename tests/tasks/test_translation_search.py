"""Greedy and beam search: hand-made distributions and a fixed random tiny Transformer."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsft.layers import TransformerSeq2SeqBackbone
from tfsft.tasks.translation.search import beam_search, greedy_search, length_penalty
from tfsft.tasks.translation.task import TransformerTranslator, decoding_inputs

PAD, END, START = 0, 1, 2


def table_step(table):
    """A step function whose next-token distribution depends only on the previous token."""
    log_table = tf.math.log(tf.constant(table, tf.float32))  # (V, V) rows: previous token

    def step(tokens, t, state):
        previous = tf.gather(tokens, t, axis=1)  # (N,)
        return tf.gather(log_table, previous), state

    return step


# Tokens: 0 pad, 1 end, 2 start, 3 "a", 4 "b". Greedy takes "a" (0.6) but then has
# only 0.5-probability continuations; "b" (0.4) ends with probability 1.
TABLE = [
    [0.2, 0.2, 0.2, 0.2, 0.2],
    [0.2, 0.2, 0.2, 0.2, 0.2],
    [0.0, 0.0, 0.0, 0.6, 0.4],  # after start
    [0.0, 0.5, 0.0, 0.0, 0.5],  # after "a"
    [0.0, 1.0, 0.0, 0.0, 0.0],  # after "b"
]


def test_beam_search_finds_the_better_sequence_that_greedy_misses():
    state = {"dummy": tf.zeros([1, 1])}
    ids = {"start_id": START, "end_id": END, "pad_id": PAD, "max_length": 5}
    tokens, score, length = greedy_search(table_step(TABLE), state, 1, **ids)
    assert tokens.numpy()[0].tolist()[:2] == [3, 1]  # "a" end: p = 0.6 · 0.5 = 0.30
    np.testing.assert_allclose(score.numpy(), [np.log(0.30)], rtol=1e-5)
    tokens, score, normalized, length = beam_search(table_step(TABLE), state, 1, beam_size=2,
                                                    length_penalty_alpha=0.0, **ids)
    assert tokens.numpy()[0].tolist() == [4, 1]  # "b" end: p = 0.4 · 1.0 = 0.40
    np.testing.assert_allclose(score.numpy(), [np.log(0.40)], rtol=1e-5)
    np.testing.assert_allclose(normalized.numpy(), score.numpy())
    assert length.numpy().tolist() == [2]


def test_length_penalty_is_gnmt():
    np.testing.assert_allclose(length_penalty(tf.constant([1, 7]), 0.6).numpy(), [1.0, 2.0 ** 0.6], rtol=1e-6)
    np.testing.assert_allclose(length_penalty(tf.constant(9), 0.0).numpy(), 1.0)


def test_finished_hypotheses_are_padded_and_search_stops_early():
    state = {"dummy": tf.zeros([3, 1])}
    tokens, _, _, length = beam_search(table_step(TABLE), state, 3, start_id=START, end_id=END, pad_id=PAD,
                                       beam_size=3, max_length=50, length_penalty_alpha=0.6)
    # Hypotheses "b end", "a end", "a b end": the last ends at step 3, long before max_length.
    assert tokens.shape == (3, 3)
    assert tokens.numpy().tolist() == [[4, 1, PAD]] * 3  # best: "b end", padded after its end
    assert length.numpy().tolist() == [2, 2, 2]


@pytest.fixture(scope="module")
def tiny_translator():
    keras.utils.set_random_seed(7)
    backbone = TransformerSeq2SeqBackbone(vocabulary_size=24, num_layers=1, num_heads=2, hidden_dim=16,
                                          intermediate_dim=32, dropout=0.0, dtype="float32")
    return TransformerTranslator(backbone)


def search(model, beam_size, alpha=0.0):
    token_ids = tf.constant([[5, 6, 7, 1], [8, 9, 1, 0], [10, 1, 0, 0], [11, 12, 13, 1]], tf.int32)
    mask = tf.cast(token_ids != 0, tf.int32)

    @tf.function
    def run():
        state, step = decoding_inputs(model, token_ids, mask, 12)
        ids = {"start_id": START, "end_id": END, "pad_id": PAD, "max_length": 12}
        if beam_size == 0:
            return greedy_search(step, state, 4, **ids)
        return beam_search(step, state, 4, beam_size=beam_size, length_penalty_alpha=alpha, **ids)

    return [x.numpy() for x in run()]


def test_beam_size_one_is_greedy(tiny_translator):
    greedy_tokens, greedy_score, greedy_length = search(tiny_translator, 0)
    for alpha in (0.0, 0.6):
        tokens, score, _, length = search(tiny_translator, 1, alpha)
        np.testing.assert_array_equal(tokens, greedy_tokens)
        np.testing.assert_allclose(score, greedy_score, rtol=1e-5)
        np.testing.assert_array_equal(length, greedy_length)


def test_scores_are_the_model_log_probabilities(tiny_translator):
    """The reported score equals log P(Y|X) recomputed by teacher forcing."""
    tokens, score, _, length = search(tiny_translator, 3)
    token_ids = np.array([[5, 6, 7, 1], [8, 9, 1, 0], [10, 1, 0, 0], [11, 12, 13, 1]], np.int32)
    for row in range(4):
        target = tokens[row, :length[row]]
        decoder_in = np.concatenate([[START], target[:-1]])[None]
        logits = tiny_translator({
            "encoder_token_ids": token_ids[row:row + 1], "encoder_padding_mask": (token_ids[row:row + 1] != 0) * 1,
            "decoder_token_ids": decoder_in, "decoder_padding_mask": np.ones_like(decoder_in),
        })
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float64)).numpy()[0]  # (T, V)
        np.testing.assert_allclose(score[row], log_probs[np.arange(len(target)), target].sum(), rtol=1e-4)


def test_larger_beams_never_score_worse_on_a_fixed_model(tiny_translator):
    """Not a theorem for beam search in general; checked on this fixed random model (α = 0)."""
    scores = [search(tiny_translator, k)[1] for k in (1, 2, 4, 8)]
    for smaller, larger in itertools.pairwise(scores):
        assert np.all(larger >= smaller - 1e-5), (smaller, larger)
    assert np.any(scores[-1] > scores[0] + 1e-5)  # the wider beams did find better sequences
