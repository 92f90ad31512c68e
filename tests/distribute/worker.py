"""A `tfsft train` process for the tests' local clusters, optionally killed after a step.

    python tests/distribute/worker.py CONFIG [--set KEY=VALUE ...] [--crash-worker I --crash-step N] [--moved FILE]

Worker I (its index in TF_CONFIG; 0 without one) ends its process abruptly
(`os._exit`, as a killed machine would) once N optimizer steps are done; the
others block on it until they are stopped. `--moved` writes how far training
moved the weights (the largest absolute change) to FILE.
"""

import argparse
import json
import os

import keras

from tfsft.experiment import load_config
from tfsft.training import train


class CrashAt(keras.callbacks.Callback):
    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            os._exit(3)


class Moved(keras.callbacks.Callback):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self.start = [w.numpy() for w in self.model.trainable_weights]

    def on_train_end(self, logs=None):
        moved = max(float(abs(w.numpy() - s).max()) for w, s in zip(self.model.trainable_weights, self.start))
        with open(self.path, "w") as f:
            json.dump(moved, f)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--crash-worker", type=int)
    parser.add_argument("--crash-step", type=int)
    parser.add_argument("--moved")
    args = parser.parse_args()
    index = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
    callbacks = [CrashAt(args.crash_step)] if index == args.crash_worker else []
    callbacks += [Moved(args.moved)] if args.moved else []
    train(load_config(args.config, args.overrides), callbacks=callbacks)


if __name__ == "__main__":
    main()
