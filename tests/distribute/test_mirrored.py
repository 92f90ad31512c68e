"""The GPU path on the CPU: MirroredStrategy over 2 logical CPU devices, float32 and mixed_float16 with loss scaling.

The CPU is split into two logical devices before TensorFlow initialises, so
the runs happen in a fresh Python process.
"""

import json
import subprocess
import sys

import keras
import numpy as np

from tests.conftest import tiny_text_config
from tfsft.config import save_config

SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfsft.experiment import load_config
from tfsft.training import train

class Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = [w.numpy() for w in self.model.trainable_weights]

    def on_train_end(self, logs=None):
        optimizer = self.model.optimizer
        moved = max(float(abs(w.numpy() - s).max()) for w, s in zip(self.model.trainable_weights, self.start))
        self.seen = {"optimizer": type(optimizer).__name__, "loss": float(logs["loss"]), "moved": moved,
                     "replicas": self.model.distribute_strategy.num_replicas_in_sync,
                     "loss_scale": (float(optimizer.dynamic_scale.numpy()) if hasattr(optimizer, "dynamic_scale")
                                    else None)}

config_path, runs, root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
seen = {}
for name, overrides in runs.items():
    record = Record()
    train(load_config(config_path, overrides + [f"run_dir={root}/{name}"]), log=lambda _: None, callbacks=[record])
    seen[name] = record.seen
print(json.dumps(seen))
"""


def weights(run) -> list[np.ndarray]:
    return [w.numpy() for w in keras.saving.load_model(run / "model.keras", compile=False).weights]


def test_mirrored_over_two_devices_equals_one_device_and_mixed_float16_scales_the_loss(tmp_path, tiny_vocab):
    # clipnorm 0.01 clips every step: the clipped norm must be the global batch's, not each replica's
    config = tiny_text_config(tmp_path, tiny_vocab, clipnorm=0.01, batch_size=8)
    config.model.dropout = config.task.dropout = 0.0  # no random numbers: one device and two draw the same
    save_config(config, tmp_path / "config.yaml")
    runs = {"one": ["train.strategy=default"], "mirrored": ["train.strategy=mirrored"],
            "mixed": ["train.strategy=mirrored", "train.precision=mixed_float16"]}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "config.yaml"), json.dumps(runs),
                           str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])

    assert [seen[name]["replicas"] for name in runs] == [1, 2, 2]
    one, mirrored = weights(tmp_path / "one"), weights(tmp_path / "mirrored")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, mirrored)) < 1e-5
    assert seen["one"]["moved"] > 1e-3, "training moved the weights by far more than the tolerance"

    mixed = seen["mixed"]
    assert mixed["optimizer"] == "SummedLossScaleOptimizer"
    assert mixed["loss_scale"] < 2 ** 15, "steps that overflowed float16 were skipped and the scale halved"
    assert np.isfinite(mixed["loss"]) and abs(mixed["loss"] - seen["mirrored"]["loss"]) < 0.05
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(mirrored, weights(tmp_path / "mixed")))
    assert moved < 1e-2, "float16 compute with loss scaling trains like float32, to float16 precision"


VERDICT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfsft.optimization import FusedAdamW, SummedLossScaleOptimizer

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
seen = {}
for name in ("keras", "summed"):
    with strategy.scope():
        weight = keras.Variable([1.0, 2.0])
        if name == "keras":
            optimizer = keras.optimizers.LossScaleOptimizer(FusedAdamW(learning_rate=0.1))
        else:
            optimizer = SummedLossScaleOptimizer(FusedAdamW(learning_rate=0.1, sum_replicas=False))
        optimizer.build([weight])

    @tf.function
    def step():
        def replica_step():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            # replica 0's gradient is finite, replica 1's overflowed
            grad = tf.where(replica == 1, tf.constant([float("inf"), 0.0]), tf.constant([1.0, 1.0]))
            optimizer.apply_gradients([(grad, weight)])
        strategy.run(replica_step)

    step()
    seen[name] = {"weight": [float(w) for w in weight.numpy()], "scale": float(optimizer.dynamic_scale.numpy())}
print(json.dumps(seen))
"""


def test_a_step_that_overflows_on_one_replica_only_is_skipped_on_every_replica():
    proc = subprocess.run([sys.executable, "-c", VERDICT], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not np.all(np.isfinite(seen["keras"]["weight"])), "Keras' own verdict (replica 0's) applies the step"
    assert seen["summed"]["weight"] == [1.0, 2.0], "the step is skipped: the summed gradient is not finite"
    assert seen["summed"]["scale"] == 2.0 ** 14, "and the loss scale halved (from 2^15)"
