"""AdamW with linear warm-up and linear decay, as in BERT fine-tuning.

`FusedAdamW` is Keras' AdamW with a faster TensorFlow update (measured: Keras'
per-weight Adam ops were about 40 % of a MiniLM fine-tuning step on 2 CPU cores):

* dense weights use TF's fused `ResourceApplyAdam` kernel — one multi-threaded
  pass over (w, m, v, g) instead of ~10 separate element-wise ops;
* embedding gradients stay sparse (`tf.IndexedSlices`) through gradient
  clipping; by default they are then applied densely with the same fused
  kernel, so every row's moments decay each step exactly as in Keras' AdamW.
  With `lazy_embeddings=True` only the rows in the batch are updated ("lazy"
  Adam, as TF Addons' LazyAdam): about 6 % faster per MiniLM step, but it
  measured 89.22 % vs 90.25 % SST-2 dev accuracy after one epoch (same seed).

Weight decay stays Keras' own decoupled decay: w ← w − lr·λ·w before the Adam step.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

NO_DECAY = ["bias", "gamma", "beta"]  # biases and LayerNorm scale/offset


@keras.saving.register_keras_serializable(package="tfsft")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(s) = peak·s/w for s < w, then peak·max(0, (T-s)/(T-w)).

    Args:
        peak: the learning rate reached at the end of warm-up.
        warmup_steps: w, steps of linear warm-up from 0.
        total_steps: T, the step at which the rate reaches 0.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        decay_steps = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        warming = self.peak * step / warmup
        decaying = self.peak * ops.maximum(0.0, (self.total_steps - step) / decay_steps)
        return ops.where(step < self.warmup_steps, warming, decaying)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def _combine_duplicates(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """Sums the rows of repeated indices, so each row appears once."""
    unique, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(unique)[0])
    return tf.IndexedSlices(values, unique, gradient.dense_shape)


def _sum_over_replicas(grads: list) -> list:
    """Each gradient summed over the replicas in sync (unchanged on one replica or outside a replica context)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g in grads if g is not None]))
    return [None if g is None else next(summed) for g in grads]


@keras.saving.register_keras_serializable(package="tfsft")
class FusedAdamW(keras.optimizers.AdamW):
    """AdamW with fused dense updates and lazy sparse (embedding) updates.

    Same arguments and, for dense weights, the same update as
    `keras.optimizers.AdamW`: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
    w ← w − lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·m/(√v + ε). Rows of an embedding that a batch
    does not touch keep their moments unchanged when `lazy_embeddings` is set.

    Under `tf.distribute` the gradients are summed over the replicas *before*
    clipping, so the norm is that of the global batch's gradient, as on one
    device (Keras sums them afterwards, which clips each replica's own).

    Args:
        lazy_embeddings: update only the embedding rows a batch touches.
        sum_replicas: sum the gradients over the replicas (False when a
            `SummedLossScaleOptimizer` around this one has summed them).
        static_shapes: make embedding gradients dense before clipping, so that
            every tensor of the step has a fixed shape (XLA, TPUs); the rows of a
            batch (`tf.unique`) vary in number.
        **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, *args, lazy_embeddings: bool = False, sum_replicas: bool = True, static_shapes: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_embeddings = lazy_embeddings
        self.sum_replicas = sum_replicas
        self.static_shapes = static_shapes

    def get_config(self):
        return {**super().get_config(), "lazy_embeddings": self.lazy_embeddings, "sum_replicas": self.sum_replicas,
                "static_shapes": self.static_shapes}

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)  # summed over the replicas already, by _clip_gradients

    def _clip_gradients(self, grads):
        if self.sum_replicas:
            grads = _sum_over_replicas(grads)
        if self.static_shapes:
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        if not (self.global_clipnorm and self.global_clipnorm > 0):
            return super()._clip_gradients(grads)
        grads = [_combine_duplicates(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        squares = [
            tf.reduce_sum(tf.square(tf.cast(g.values if isinstance(g, tf.IndexedSlices) else g, tf.float32)))
            for g in grads if g is not None
        ]
        norm = tf.sqrt(tf.add_n(squares))
        # (norm - norm) keeps a NaN/inf norm visible, as Keras' clip_by_global_norm does.
        scale = self.global_clipnorm / tf.maximum(norm, self.global_clipnorm) + (norm - norm)
        return [
            None if g is None
            else tf.IndexedSlices(g.values * tf.cast(scale, g.values.dtype), g.indices, g.dense_shape)
            if isinstance(g, tf.IndexedSlices) else g * tf.cast(scale, g.dtype)
            for g in grads
        ]

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        epsilon = tf.cast(self.epsilon, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        if isinstance(gradient, tf.IndexedSlices) and not self.lazy_embeddings:
            gradient = tf.convert_to_tensor(gradient)  # (vocab, D), zero rows where the batch has no token
        if not isinstance(gradient, tf.IndexedSlices):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                grad=tf.cast(gradient, dtype),
            )
            return
        gradient = _combine_duplicates(gradient)  # (rows, D)
        rows, g = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(g)
        m.value.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.value.scatter_update(tf.IndexedSlices(v_rows, rows))
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


@keras.saving.register_keras_serializable(package="tfsft")
class SummedLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Dynamic loss scaling (float16) that skips or applies a step on every replica alike.

    Keras' `LossScaleOptimizer` checks each replica's *own* gradients for
    inf/NaN and follows the first replica's verdict (the sum over replicas
    happens later, inside the inner optimizer): when only another replica
    overflows, the step is applied and the weights become NaN. Here the
    gradients are summed over the replicas first, so every replica checks the
    same sum, and the inner `FusedAdamW` is set not to sum them again.
    """

    def __init__(self, inner_optimizer: FusedAdamW, **kwargs):
        super().__init__(inner_optimizer, **kwargs)
        inner_optimizer.sum_replicas = False  # summed here, before the inf/NaN check

    def apply(self, grads, trainable_variables=None):
        return super().apply(_sum_over_replicas(list(grads)), trainable_variables)


def make_optimizer(train_config, total_steps: int, static_shapes: bool = False) -> keras.optimizers.Optimizer:
    """AdamW (no decay on biases and LayerNorm) with warm-up/decay and clipping.

    Under `mixed_float16` it is wrapped in a `SummedLossScaleOptimizer`.

    Args:
        train_config: a `TrainConfig` (learning_rate, warmup_ratio,
            weight_decay, clipnorm, lazy_embedding_updates, precision).
        total_steps: the number of optimizer steps of the whole run.
        static_shapes: fixed-shape gradients only (XLA, TPUs; `FusedAdamW`).
    """
    schedule = WarmupLinearDecay(
        train_config.learning_rate, int(train_config.warmup_ratio * total_steps), total_steps
    )
    optimizer = FusedAdamW(
        learning_rate=schedule,
        weight_decay=train_config.weight_decay,
        epsilon=1e-6,
        global_clipnorm=train_config.clipnorm,
        lazy_embeddings=train_config.lazy_embedding_updates,
        static_shapes=static_shapes,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return SummedLossScaleOptimizer(optimizer) if train_config.precision == "mixed_float16" else optimizer
