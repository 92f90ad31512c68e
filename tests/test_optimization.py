"""FusedAdamW matches Keras' AdamW; the warm-up/decay schedule has the stated shape."""

import numpy as np
import pytest
import keras

from tfsft.optimization import FusedAdamW, WarmupLinearDecay


def train_weights(optimizer_cls, model_fn, x, y, **kwargs):
    keras.utils.set_random_seed(0)
    model = model_fn()
    model.compile(optimizer=optimizer_cls(learning_rate=1e-2, weight_decay=0.01, **kwargs),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return model.get_weights()


def dense_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


def embedding_model(vocab):
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(vocab, 8)(inp))
    return keras.Model(inp, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("clip", [None, 0.05])
def test_dense_updates_equal_keras_adamw(clip):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)
    ours = train_weights(FusedAdamW, dense_model, x, y, global_clipnorm=clip)
    keras_ = train_weights(keras.optimizers.AdamW, dense_model, x, y, global_clipnorm=clip)
    for a, b in zip(ours, keras_):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sparse_embedding_update_equals_dense_when_every_row_is_touched():
    # every batch contains every token id, so lazy Adam and dense Adam coincide
    rng = np.random.default_rng(1)
    x = np.stack([rng.permutation(5) for _ in range(64)]).astype("int32")
    y = rng.integers(0, 3, 64)
    ours = train_weights(FusedAdamW, lambda: embedding_model(5), x, y, global_clipnorm=1.0, lazy_embeddings=True)
    keras_ = train_weights(keras.optimizers.AdamW, lambda: embedding_model(5), x, y, global_clipnorm=1.0)
    for a, b in zip(ours, keras_):
        np.testing.assert_allclose(a, b, atol=1e-5)


def one_hot_model(vocab, embedding_model_weights):
    """`embedding_model` with the lookup written as one_hot(x) · E, so E gets a dense gradient."""
    inp = keras.Input((5,), dtype="int32")
    table = keras.layers.Dense(8, use_bias=False)
    x = keras.layers.GlobalAveragePooling1D()(table(keras.ops.one_hot(inp, vocab)))
    model = keras.Model(inp, keras.layers.Dense(3)(x))
    model.set_weights(embedding_model_weights)
    return model


@pytest.mark.parametrize("clip", [None, 1.0])
def test_default_embedding_updates_equal_dense_adamw_with_untouched_rows(clip):
    """Sparse embedding gradients (with repeated ids) give exactly AdamW on the dense gradient."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 100, (64, 5)).astype("int32")  # a batch (16 × 5 ids) misses about half of rows 0..99
    y = rng.integers(0, 3, 64)
    ours = train_weights(FusedAdamW, lambda: embedding_model(120), x, y, global_clipnorm=clip)
    keras.utils.set_random_seed(0)
    initial = embedding_model(120).get_weights()
    reference = train_weights(keras.optimizers.AdamW, lambda: one_hot_model(120, initial), x, y, global_clipnorm=clip)
    lazy = train_weights(FusedAdamW, lambda: embedding_model(120), x, y, global_clipnorm=clip, lazy_embeddings=True)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(lazy[0] - reference[0]).max() > 1e-3  # lazy Adam is a different algorithm


def test_optimizer_config_round_trips_lazy_embeddings():
    optimizer = FusedAdamW(learning_rate=1e-3, lazy_embeddings=True)
    assert FusedAdamW.from_config(optimizer.get_config()).lazy_embeddings is True


def test_untouched_embedding_rows_keep_their_values_apart_from_weight_decay():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 10, (64, 5)).astype("int32")  # rows 10..49 never appear
    y = rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    initial = embedding_model(50).get_weights()[0]
    trained = train_weights(FusedAdamW, lambda: embedding_model(50), x, y, lazy_embeddings=True)[0]
    decay = (1 - 1e-2 * 0.01) ** 12  # 12 steps of w ← w − lr·λ·w
    np.testing.assert_allclose(trained[10:], initial[10:] * decay, rtol=1e-5)
    assert np.abs(trained[:10] - initial[:10]).max() > 1e-3


def test_schedule_warms_up_then_decays_linearly_to_zero():
    schedule = WarmupLinearDecay(1.0, warmup_steps=10, total_steps=110)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    again = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(again(60)) == pytest.approx(0.5)
