"""Packing (`task.packing: true`): several training examples in one row, each attending only to itself.

Rows: examples of T_i = n_i - 1 positions (inputs `ids[:-1]`, targets `ids[1:]`,
weights) are placed first-fit decreasing into rows of at most L positions. A
row carries `segment_ids` (1, 2, … per example; 0 = padding) and `positions`
(0 … T_i - 1 within each example).

Model: `PackedCausalLM` wraps the KerasHub CausalLM. A batch with
`segment_ids` runs the backbone's own layers (same weights) with a
block-diagonal causal mask, token i attending to j ≤ i of its own segment, and
each example's own positions: GPT-2 reads its learned position table at
`positions`; Llama's RoPE rotates queries and keys by their row position, and a
rotation by the same offset cancels in q·k, so the mask suffices. A packed
example's logits thus equal its unpacked logits (up to float rounding).
Without `segment_ids` (evaluation, generation, serving) it is the plain
CausalLM: `backbone` and `call_with_cache` pass through.

`EncodedSplit.size` is the number of rows; `train.batch_size` counts rows, and
`train()` plans an epoch from the number of examples, so one "epoch" is about
k passes over the rows at k examples per row.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from tfsft.data.pipeline import EncodedSplit


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row's lengths summing to ≤ `capacity`."""
    space = np.zeros(0, np.int64)
    rows: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = np.flatnonzero(space >= lengths[index])
        if len(fits):
            rows[fits[0]].append(index)
            space[fits[0]] -= lengths[index]
        else:
            rows.append([index])
            space = np.append(space, capacity - lengths[index])
    return rows


def packed_split(ids: list[np.ndarray], weights: list[np.ndarray], capacity: int, truncated: int) -> EncodedSplit:
    """`({token_ids, padding_mask, segment_ids, positions} (T,), targets (T,), weights (T,))` per packed row."""
    rows = pack_rows([len(x) - 1 for x in ids], capacity)
    columns = {name: [] for name in ("token_ids", "targets", "weights", "segment_ids", "positions")}
    for row in rows:
        parts = [(ids[i], weights[i]) for i in row]
        columns["token_ids"].append(np.concatenate([x[:-1] for x, _ in parts]))
        columns["targets"].append(np.concatenate([x[1:] for x, _ in parts]))
        columns["weights"].append(np.concatenate([w[1:] for _, w in parts]).astype(np.float32))
        columns["segment_ids"].append(np.concatenate([np.full(len(x) - 1, k + 1) for k, (x, _) in enumerate(parts)]))
        columns["positions"].append(np.concatenate([np.arange(len(x) - 1) for x, _ in parts]))
    lengths = [len(r) for r in columns["token_ids"]]
    ragged = {k: tf.RaggedTensor.from_row_lengths(np.concatenate(v).astype(np.float32 if k == "weights" else np.int32),
                                                  lengths) for k, v in columns.items()}

    @tf.autograph.experimental.do_not_convert
    def example(row):
        features = {"token_ids": row["token_ids"], "padding_mask": tf.ones_like(row["token_ids"]),
                    "segment_ids": row["segment_ids"], "positions": row["positions"]}
        return features, row["targets"], row["weights"]

    dataset = tf.data.Dataset.from_tensor_slices(ragged).map(example).cache()
    return EncodedSplit(dataset, len(rows), truncated, float(np.mean(lengths)))


def segment_mask(segment_ids):
    """(B, T) segment ids → (B, T, T) int mask: same segment, not padding (the layers add causality)."""
    same = ops.equal(ops.expand_dims(segment_ids, 2), ops.expand_dims(segment_ids, 1))
    real = ops.expand_dims(ops.greater(segment_ids, 0), 1)
    return ops.cast(ops.logical_and(same, real), "int32")


@keras.saving.register_keras_serializable(package="tfsft")
class PackedCausalLM(keras.Model):
    """A KerasHub `LlamaCausalLM` / `GPT2CausalLM` that also trains on packed rows (see the module doc).

    Args:
        causal_lm: the CausalLM (preprocessor None) whose weights it uses.
    """

    def __init__(self, causal_lm, **kwargs):
        super().__init__(**kwargs)
        self.causal_lm = causal_lm
        self.built = True  # no weights of its own; the CausalLM's are built

    @property
    def backbone(self):
        return self.causal_lm.backbone

    def call(self, inputs, training=None):
        if "segment_ids" not in inputs:
            return self.causal_lm({"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
                                  training=training)
        backbone = self.backbone
        mask = segment_mask(inputs["segment_ids"])
        x = backbone.token_embedding(inputs["token_ids"])
        if isinstance(backbone, keras_hub.models.GPT2Backbone):
            x = backbone.embeddings_add((x, backbone.position_embedding(x, positions=inputs["positions"])))
            x = backbone.embeddings_dropout(x, training=training)
        for layer in backbone.transformer_layers:
            x = layer(x, decoder_attention_mask=mask, training=training)
        return backbone.token_embedding(backbone.layer_norm(x), reverse=True)

    def call_with_cache(self, token_ids, cache, cache_update_index):
        return self.causal_lm.call_with_cache(token_ids, cache, cache_update_index)

    def compile(self, *args, weighted_metrics=None, **kwargs):
        """As `CausalLM.compile`: a weighted token accuracy unless `weighted_metrics` is given."""
        weighted = weighted_metrics or [keras.metrics.SparseCategoricalAccuracy()]
        super().compile(*args, weighted_metrics=weighted, **kwargs)

    def get_config(self):
        causal_lm = keras.saving.serialize_keras_object(self.causal_lm)
        causal_lm.pop("compile_config", None)  # KerasHub compiles every task it builds; this wrapper is what trains
        return {**super().get_config(), "causal_lm": causal_lm}

    @classmethod
    def from_config(cls, config):
        causal_lm = keras.saving.deserialize_keras_object(config.pop("causal_lm"))
        return cls(causal_lm, **config)
