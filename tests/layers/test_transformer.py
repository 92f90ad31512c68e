"""Tests for the backbones: interface, masking, presets and a small fit."""

import keras
import numpy as np
import pytest

from tfsft.layers import TRANSFORMER_PRESETS
from tfsft.layers import TransformerDecoder
from tfsft.layers import TransformerEncoder
from tfsft.layers import TransformerEncoderBackbone
from tfsft.layers import TransformerSeq2SeqBackbone
from tfsft.layers import get_preset_config

VOCAB = 50


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _padded_batch(rng, batch=3, length=8, lengths=(8, 5, 3)):
    ids = rng.integers(1, VOCAB, size=(batch, length)).astype("int32")
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype("int32")
    return np.where(mask == 1, ids, 0), mask


def test_encoder_backbone_interface():
    backbone = TransformerEncoderBackbone.from_preset("tiny", vocabulary_size=VOCAB)
    ids, mask = _padded_batch(np.random.default_rng(0))
    out = backbone({"token_ids": ids, "padding_mask": mask})
    assert set(out) == {"sequence_output", "pooled_output"}
    assert out["sequence_output"].shape == (3, 8, 32)
    assert out["pooled_output"].shape == (3, 32)
    np.testing.assert_allclose(_np(out["pooled_output"]), _np(out["sequence_output"])[:, 0])
    assert isinstance(backbone.token_embedding, keras.layers.Embedding)
    assert backbone.token_embedding.embeddings.shape == (VOCAB, 32)
    assert isinstance(backbone.encoder, TransformerEncoder)
    assert (backbone.hidden_dim, backbone.num_layers) == (32, 2)
    assert (backbone.vocabulary_size, backbone.max_sequence_length) == (VOCAB, 512)
    logits = backbone.token_embedding(out["sequence_output"], reverse=True)
    assert logits.shape == (3, 8, VOCAB)
    # A bool padding mask gives the same result as an int one.
    out_bool = backbone({"token_ids": ids, "padding_mask": mask.astype(bool)})
    np.testing.assert_allclose(_np(out_bool["sequence_output"]), _np(out["sequence_output"]))


@pytest.mark.parametrize("norm_first,position_embedding", [(False, "sinusoidal"), (True, "learned")])
def test_padding_tokens_do_not_change_real_positions(norm_first, position_embedding):
    backbone = TransformerEncoderBackbone.from_preset(
        "tiny", vocabulary_size=VOCAB, norm_first=norm_first,
        position_embedding=position_embedding, max_sequence_length=8,
    )
    rng = np.random.default_rng(1)
    ids, mask = _padded_batch(rng)
    out = _np(backbone({"token_ids": ids, "padding_mask": mask})["sequence_output"])
    ids2 = np.where(mask == 1, ids, rng.integers(1, VOCAB, size=ids.shape))
    assert np.any(ids2 != ids)
    out2 = _np(backbone({"token_ids": ids2, "padding_mask": mask})["sequence_output"])
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], out2[real], atol=1e-5)
    # Sanity: changing a *real* token does change the real outputs.
    ids3 = ids.copy()
    ids3[:, 0] = (ids3[:, 0] % (VOCAB - 1)) + 1
    out3 = _np(backbone({"token_ids": ids3, "padding_mask": mask})["sequence_output"])
    assert np.all(np.abs(out3 - out)[real].max(-1) > 1e-4)


def _seq2seq_inputs(rng, t_e=7, t_d=6):
    enc_ids, enc_mask = _padded_batch(rng, length=t_e, lengths=(7, 4, 2))
    dec_ids, dec_mask = _padded_batch(rng, length=t_d, lengths=(6, 6, 3))
    return {
        "encoder_token_ids": enc_ids,
        "encoder_padding_mask": enc_mask,
        "decoder_token_ids": dec_ids,
        "decoder_padding_mask": dec_mask,
    }


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_seq2seq_backbone_interface_and_tied_embeddings(tie_embeddings):
    backbone = TransformerSeq2SeqBackbone.from_preset(
        "tiny", vocabulary_size=VOCAB, tie_embeddings=tie_embeddings, num_decoder_layers=3
    )
    out = backbone(_seq2seq_inputs(np.random.default_rng(2)))
    assert set(out) == {"encoder_sequence_output", "decoder_sequence_output"}
    assert out["encoder_sequence_output"].shape == (3, 7, 32)
    assert out["decoder_sequence_output"].shape == (3, 6, 32)
    assert isinstance(backbone.encoder, TransformerEncoder)
    assert isinstance(backbone.decoder, TransformerDecoder)
    assert len(backbone.decoder.decoder_layers) == 3
    assert backbone.token_embedding is backbone.decoder_embedding.token_embedding
    tables = {id(w) for w in backbone.trainable_weights if w.shape == (VOCAB, 32)}
    assert (backbone.encoder_embedding is backbone.decoder_embedding) == tie_embeddings
    assert len(tables) == (1 if tie_embeddings else 2)


def test_seq2seq_decoder_is_causal_and_ignores_padding():
    backbone = TransformerSeq2SeqBackbone.from_preset("tiny", vocabulary_size=VOCAB)
    rng = np.random.default_rng(3)
    inputs = _seq2seq_inputs(rng)
    out = _np(backbone(inputs)["decoder_sequence_output"])
    t = 2
    future = dict(inputs)
    future["decoder_token_ids"] = inputs["decoder_token_ids"].copy()
    future["decoder_token_ids"][:, t + 1:] = rng.integers(1, VOCAB, size=(3, 6 - t - 1))
    out_future = _np(backbone(future)["decoder_sequence_output"])
    np.testing.assert_allclose(out[:, : t + 1], out_future[:, : t + 1], atol=1e-5)
    assert not np.allclose(out[:, t + 1:], out_future[:, t + 1:], atol=1e-3)

    padded = dict(inputs)  # change padded encoder tokens: nothing moves
    padded["encoder_token_ids"] = np.where(
        inputs["encoder_padding_mask"] == 1, inputs["encoder_token_ids"], 7
    )
    assert np.any(padded["encoder_token_ids"] != inputs["encoder_token_ids"])
    out_padded = backbone(padded)
    np.testing.assert_allclose(_np(out_padded["decoder_sequence_output"]), out, atol=1e-5)


def test_seq2seq_encode_then_decode_matches_the_full_model():
    backbone = TransformerSeq2SeqBackbone.from_preset("tiny", vocabulary_size=VOCAB)
    inputs = _seq2seq_inputs(np.random.default_rng(4))
    full = _np(backbone(inputs)["decoder_sequence_output"])
    memory = backbone.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
    # Step-by-step: decoding the prefix [:t+1] reproduces row t of the full run.
    for t in (0, 3, 5):
        step = backbone.decode(
            inputs["decoder_token_ids"][:, : t + 1], memory,
            encoder_padding_mask=inputs["encoder_padding_mask"],
            decoder_padding_mask=inputs["decoder_padding_mask"][:, : t + 1],
        )
        np.testing.assert_allclose(_np(step)[:, t], full[:, t], atol=1e-5)


def test_presets_and_overrides():
    assert TRANSFORMER_PRESETS["base"] == {
        "num_layers": 6, "hidden_dim": 512, "num_heads": 8,
        "intermediate_dim": 2048, "dropout": 0.1,
    }
    config = get_preset_config("tiny", vocabulary_size=10, num_layers=1)
    assert config["num_layers"] == 1 and config["hidden_dim"] == 32
    backbone = TransformerEncoderBackbone.from_preset(
        "tiny", vocabulary_size=10, activation="gelu", norm_first=True
    )
    assert backbone.get_config()["activation"] == "gelu" and backbone.norm_first
    with pytest.raises(ValueError, match="Received: preset='huge'"):
        get_preset_config("huge")
    with pytest.raises(ValueError, match="vocabulary_size"):
        TransformerEncoderBackbone.from_preset("tiny")


def test_backbone_validates_hidden_dim():
    with pytest.raises(ValueError, match="Received: hidden_dim=30, num_heads=4"):
        TransformerEncoderBackbone(vocabulary_size=10, num_layers=1, num_heads=4,
                                   hidden_dim=30, intermediate_dim=8)


def test_fit_encoder_backbone_with_classification_head():
    """Learnable synthetic task: does token 5 appear in the sequence?"""
    rng = np.random.default_rng(5)
    n, length = 768, 10
    ids = rng.integers(6, 20, size=(n, length)).astype("int32")
    ids[:, 0] = 1  # [CLS]-like first token, read out by pooled_output
    labels = rng.integers(0, 2, size=n).astype("int32")
    lengths = rng.integers(4, length + 1, size=n)
    where5 = rng.integers(1, lengths)  # a real (non-padding) position
    ids[labels == 1, where5[labels == 1]] = 5
    mask = (np.arange(length)[None] < lengths[:, None]).astype("int32")
    ids = ids * mask  # pad id 0
    x = {"token_ids": ids, "padding_mask": mask}
    train = slice(0, 512)
    test = slice(512, n)

    backbone = TransformerEncoderBackbone.from_preset("tiny", vocabulary_size=20, dropout=0.0)
    inputs = backbone.input
    logits = keras.layers.Dense(2)(backbone(inputs)["pooled_output"])
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    xtrain = {k: v[train] for k, v in x.items()}
    xtest = {k: v[test] for k, v in x.items()}
    before_loss, before_acc = model.evaluate(xtest, labels[test], verbose=0)
    history = model.fit(xtrain, labels[train], batch_size=32, epochs=6, verbose=0)
    after_loss, after_acc = model.evaluate(xtest, labels[test], verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert after_loss < 0.5 * before_loss, (before_loss, after_loss)
    assert after_acc > 0.9 and after_acc > before_acc + 0.3, (before_acc, after_acc)
