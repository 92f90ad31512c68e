"""Every layer and backbone: config round trip, .keras save/load,
mixed_bfloat16, and gradients reaching every trainable weight."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsft.layers import MultiHeadAttention
from tfsft.layers import PositionwiseFeedForward
from tfsft.layers import ScaledDotProductAttention
from tfsft.layers import TokenAndPositionEmbedding
from tfsft.layers import TransformerDecoder
from tfsft.layers import TransformerDecoderLayer
from tfsft.layers import TransformerEncoder
from tfsft.layers import TransformerEncoderBackbone
from tfsft.layers import TransformerSeq2SeqBackbone

# Keras' .keras writer calls np.array() on TF variables, which NumPy 2 flags
# (harmless; a Keras/TF issue, not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

B, T, S, D, V = 2, 6, 5, 16, 30  # batch, target len, source len, d_model, vocab


def _floats(rng, *shape):
    return rng.normal(size=shape).astype("float32")


def _padding(rng, b, t):
    mask = np.ones((b, t), "int32")
    mask[0, t - 2:] = 0
    return mask


def _ids(rng, b, t):
    return rng.integers(1, V, size=(b, t)).astype("int32")


# name -> (make_layer(), make_inputs(rng) -> dict, apply(layer, inputs) -> outputs)
CASES = {
    "sdpa": (
        lambda: ScaledDotProductAttention(dropout=0.1),
        lambda r: {"q": _floats(r, B, T, 8), "k": _floats(r, B, S, 8),
                   "v": _floats(r, B, S, 8), "mask": r.random((B, T, S)) > 0.3},
        lambda l, i: l(i["q"], i["k"], i["v"], attention_mask=i["mask"]),
    ),
    "mha_cross": (
        lambda: MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1),
        lambda r: {"x": _floats(r, B, T, D), "m": _floats(r, B, S, D),
                   "mask": r.random((B, T, S)) > 0.3},
        lambda l, i: l(i["x"], i["m"], attention_mask=i["mask"]),
    ),
    "mha_self_causal": (
        lambda: MultiHeadAttention(num_heads=4, key_dim=4, value_dim=2, output_dim=8),
        lambda r: {"x": _floats(r, B, T, D)},
        lambda l, i: l(i["x"], use_causal_mask=True, return_attention_scores=True),
    ),
    "ffn": (
        lambda: PositionwiseFeedForward(32, activation="gelu", dropout=0.1),
        lambda r: {"x": _floats(r, B, T, D)},
        lambda l, i: l(i["x"]),
    ),
    "embedding_sinusoidal": (
        lambda: TokenAndPositionEmbedding(V, T, D, dropout=0.1),
        lambda r: {"ids": _ids(r, B, T)},
        lambda l, i: l(i["ids"]),
    ),
    "embedding_learned": (
        lambda: TokenAndPositionEmbedding(V, T, D, position_embedding="learned"),
        lambda r: {"ids": _ids(r, B, T)},
        lambda l, i: l(i["ids"]),
    ),
    "encoder_layer_post_ln": (
        lambda: _encoder_layer(norm_first=False),
        lambda r: {"x": _floats(r, B, T, D), "pad": _padding(r, B, T)},
        lambda l, i: l(i["x"], padding_mask=i["pad"]),
    ),
    "encoder_layer_pre_ln_gelu": (
        lambda: _encoder_layer(norm_first=True, activation="gelu"),
        lambda r: {"x": _floats(r, B, T, D), "pad": _padding(r, B, T)},
        lambda l, i: l(i["x"], padding_mask=i["pad"]),
    ),
    "encoder_stack_pre_ln": (
        lambda: TransformerEncoder(2, 2, 32, norm_first=True),
        lambda r: {"x": _floats(r, B, T, D), "pad": _padding(r, B, T)},
        lambda l, i: l(i["x"], padding_mask=i["pad"]),
    ),
    "decoder_layer_cross": (
        lambda: TransformerDecoderLayer(num_heads=2, intermediate_dim=32),
        lambda r: {"y": _floats(r, B, T, D), "m": _floats(r, B, S, D),
                   "ypad": _padding(r, B, T), "mpad": _padding(r, B, S)},
        lambda l, i: l(i["y"], i["m"], decoder_padding_mask=i["ypad"],
                       encoder_padding_mask=i["mpad"]),
    ),
    "decoder_layer_decoder_only": (
        lambda: TransformerDecoderLayer(num_heads=2, intermediate_dim=32, norm_first=True),
        lambda r: {"y": _floats(r, B, T, D)},
        lambda l, i: l(i["y"]),
    ),
    "decoder_stack_pre_ln": (
        lambda: TransformerDecoder(2, 2, 32, norm_first=True, activation="gelu"),
        lambda r: {"y": _floats(r, B, T, D), "m": _floats(r, B, S, D),
                   "mpad": _padding(r, B, S)},
        lambda l, i: l(i["y"], i["m"], encoder_padding_mask=i["mpad"]),
    ),
    "encoder_backbone": (
        lambda: TransformerEncoderBackbone.from_preset("tiny", vocabulary_size=V),
        lambda r: {"token_ids": _ids(r, B, T), "padding_mask": _padding(r, B, T)},
        lambda l, i: l(i),
    ),
    "encoder_backbone_pre_ln_learned": (
        lambda: TransformerEncoderBackbone.from_preset(
            "tiny", vocabulary_size=V, norm_first=True, position_embedding="learned",
            max_sequence_length=T, activation="gelu"),
        lambda r: {"token_ids": _ids(r, B, T), "padding_mask": _padding(r, B, T)},
        lambda l, i: l(i),
    ),
    "seq2seq_backbone_tied": (
        lambda: TransformerSeq2SeqBackbone.from_preset("tiny", vocabulary_size=V),
        lambda r: {"encoder_token_ids": _ids(r, B, S), "encoder_padding_mask": _padding(r, B, S),
                   "decoder_token_ids": _ids(r, B, T), "decoder_padding_mask": _padding(r, B, T)},
        lambda l, i: l(i),
    ),
    "seq2seq_backbone_untied_pre_ln": (
        lambda: TransformerSeq2SeqBackbone.from_preset(
            "tiny", vocabulary_size=V, tie_embeddings=False, norm_first=True,
            num_decoder_layers=1, position_embedding="learned", max_sequence_length=T),
        lambda r: {"encoder_token_ids": _ids(r, B, S), "encoder_padding_mask": _padding(r, B, S),
                   "decoder_token_ids": _ids(r, B, T), "decoder_padding_mask": _padding(r, B, T)},
        lambda l, i: l(i),
    ),
}


def _encoder_layer(**kwargs):
    from tfsft.layers import TransformerEncoderLayer

    return TransformerEncoderLayer(num_heads=2, intermediate_dim=32, **kwargs)


def _setup(name):
    """Returns (layer, model, numpy inputs); model wraps the layer functionally."""
    make, make_inputs, apply = CASES[name]
    inputs = make_inputs(np.random.default_rng(0))
    layer = make()
    if isinstance(layer, keras.Model):
        return layer, layer, inputs
    symbolic = {
        k: keras.Input(shape=v.shape[1:], dtype=str(v.dtype), name=k) for k, v in inputs.items()
    }
    model = keras.Model(symbolic, apply(layer, symbolic))
    return layer, model, inputs


def _flat(outputs):
    return [keras.ops.convert_to_numpy(keras.ops.cast(o, "float32"))
            for o in keras.tree.flatten(outputs)]


def _assert_same(a, b, atol=1e-6):
    a, b = _flat(a), _flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol)


@pytest.mark.parametrize("name", CASES)
def test_get_config_from_config_round_trip(name):
    layer, model, inputs = _setup(name)
    reference = model(inputs)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    if isinstance(layer, keras.Model):
        clone_model = clone
    else:
        _, _, apply = CASES[name]
        clone_model = keras.Model(model.input, apply(clone, model.input))
    clone_model.set_weights(model.get_weights())
    _assert_same(clone_model(inputs), reference)


@pytest.mark.parametrize("name", CASES)
def test_keras_save_and_load(name, tmp_path):
    layer, model, inputs = _setup(name)
    reference = model(inputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    if isinstance(layer, keras.Model):
        assert type(loaded) is type(layer)
        assert loaded.get_config() == layer.get_config()
    else:
        assert any(type(sub) is type(layer) for sub in loaded.layers)
    assert len(loaded.weights) == len(model.weights)
    _assert_same(loaded(inputs), reference)


@pytest.mark.parametrize("name", CASES)
def test_mixed_bfloat16(name, mixed_bfloat16):
    layer, model, inputs = _setup(name)
    assert layer.compute_dtype == "bfloat16"
    outputs = keras.tree.flatten(model(inputs))
    for output in outputs:
        assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    for output in _flat(outputs):
        assert np.all(np.isfinite(output))
    # Weights stay float32 (mixed precision keeps float32 master weights).
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_trainable_weight(name):
    layer, model, inputs = _setup(name)
    tensors = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
    outputs = keras.tree.flatten(model(tensors))  # builds the weights
    projections = [np.random.default_rng(i).normal(size=o.shape).astype("float32")
                   for i, o in enumerate(outputs)]
    weights = model.trainable_weights
    float_inputs = [t for t in tensors.values() if t.dtype == tf.float32]
    with tf.GradientTape() as tape:
        tape.watch(float_inputs)
        outputs = keras.tree.flatten(model(tensors, training=True))
        loss = sum(tf.reduce_sum(o * p) for o, p in zip(outputs, projections))
    grads = tape.gradient(loss, [w.value for w in weights] + float_inputs)
    weight_grads, input_grads = grads[: len(weights)], grads[len(weights):]
    if not weights:  # parameter-free layer: gradients reach its inputs instead
        assert isinstance(layer, ScaledDotProductAttention)
        assert all(g is not None and np.any(g.numpy() != 0) for g in input_grads)
        return
    missing = [w.path for w, g in zip(weights, weight_grads) if g is None]
    assert not missing, missing
    zero = [w.path for w, g in zip(weights, weight_grads) if not np.any(tf.convert_to_tensor(g).numpy() != 0)]
    assert len(zero) <= 0.1 * len(weights), zero
