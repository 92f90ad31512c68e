"""Training throughput of tfsft as configured by configs/sst2_minilm.yaml.

Runs the library's own `tfsft.training.train` on the shipped config, changed
only where a benchmark must: `train.max_steps` (warm-up + timed steps), a
scratch `run_dir`, `train.verbose=0` and no validation split (validation runs
after the last step, outside the timing, and would only cost time). Whatever
the config says about precision, batch size, bucketing or XLA is what is
measured, so improvements to the library or the config show up here.

Timing: a Keras callback stamps the end of every step; steps after the
warm-up are timed. Tokens: the batches `train()` actually feeds are recorded
(Σ padding_mask = real tokens, batch × length = padded positions) by wrapping
`tfsft.training.training_dataset`, the pipeline function `train()` calls.

    python benchmarks/bench_tfsft_train.py --warmup-steps 30 --steps 120
    python benchmarks/bench_tfsft_train.py --profile /tmp/profile   # then xplane_summary.py /tmp/profile

`--profile DIR` runs TensorFlow's profiler over the timed steps (its own
overhead makes those steps slower: time without it, profile with it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from common import CONFIG, SCRATCH, StepClock, data_dir, emit, training_result
from flops import bert_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides, as for `tfsft train --set`")
    parser.add_argument("--run-dir", default=str(SCRATCH / "tfsft_train"))
    parser.add_argument("--profile", metavar="DIR", help="profile the timed steps into DIR (tf.profiler)")
    return parser.parse_args(argv)


def record_batches(make_dataset, stats: list):
    """Wraps `training_dataset` so each batch appends (real, padded) tokens to `stats`.

    The batches reach `fit` in the order they are recorded (a sequential map),
    so `stats[i]` describes the batch of optimizer step i + 1.
    """
    import tensorflow as tf

    def record(mask):
        stats.append((int(tf.reduce_sum(mask)), int(tf.size(mask))))
        return 0

    def add_stats(features, *rest):
        mask = tf.cast(features["padding_mask"], tf.int64)
        done = tf.py_function(record, [mask], tf.int64)
        with tf.control_dependencies([done]):
            features = {k: tf.identity(v) for k, v in features.items()}
        return (features, *rest)

    def wrapped(*args, **kwargs):
        return make_dataset(*args, **kwargs).map(add_stats).prefetch(tf.data.AUTOTUNE)

    return wrapped


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    import keras
    import tensorflow as tf

    import tfsft.training
    from tfsft.experiment import load_config
    from tfsft.models.backbones import resolve_source

    base = load_config(args.config)
    if "train" not in base.data.files:
        sys.exit(f"{args.config}: data.files has no train file to benchmark on")
    overrides = [
        f"train.max_steps={args.warmup_steps + args.steps}",
        f"run_dir={args.run_dir}",
        "train.verbose=0",
        "data.files=" + json.dumps({"train": base.data.files["train"]}),
        *args.set,
    ]
    config = load_config(args.config, overrides)
    shutil.rmtree(args.run_dir, ignore_errors=True)  # a fresh run, never a resumed one

    clock = StepClock(args.warmup_steps, args.steps)

    class Timing(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.tick()
            if args.profile and clock.done == args.warmup_steps:
                tf.profiler.experimental.start(args.profile)
            elif args.profile and clock.done == args.warmup_steps + args.steps:
                tf.profiler.experimental.stop()

    stats: list[tuple[int, int]] = []
    if not hasattr(tfsft.training, "training_dataset"):
        sys.exit("tfsft.training no longer calls training_dataset; update record_batches() here")
    tfsft.training.training_dataset = record_batches(tfsft.training.training_dataset, stats)
    tfsft.training.train(config, log=lambda line: print(line, file=sys.stderr), callbacks=[Timing()])

    timed = stats[args.warmup_steps: args.warmup_steps + args.steps]
    if len(timed) != args.steps:
        sys.exit(f"recorded {len(stats)} batches; expected at least {args.warmup_steps + args.steps}")
    sizes = bert_config(resolve_source(config.model.backbone))
    emit(training_result(
        "tfsft_train", clock, config.train.batch_size,
        real_tokens=sum(r for r, _ in timed), padded_tokens=sum(p for _, p in timed),
        precision=config.train.precision, jit_compile=config.train.jit_compile,
        bucket_boundaries=config.train.bucket_boundaries, sequence_length=config.model.sequence_length,
        **sizes,
    ))
    shutil.rmtree(args.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
