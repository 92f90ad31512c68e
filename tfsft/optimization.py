"""AdamW with linear warm-up and linear decay, as in BERT fine-tuning."""

from __future__ import annotations

import keras
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


def make_optimizer(train_config, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW (no decay on biases and LayerNorm) with warm-up/decay and clipping.

    Args:
        train_config: a `TrainConfig` (learning_rate, warmup_ratio,
            weight_decay, clipnorm).
        total_steps: the number of optimizer steps of the whole run.
    """
    schedule = WarmupLinearDecay(
        train_config.learning_rate, int(train_config.warmup_ratio * total_steps), total_steps
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=train_config.weight_decay,
        epsilon=1e-6,
        global_clipnorm=train_config.clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
