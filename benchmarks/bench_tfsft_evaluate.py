"""Evaluation throughput: `tfsft evaluate`'s forward passes on SST-2 dev, against training's examples/s.

`--prepare`: trains configs/sst2_minilm.yaml for 5 steps on 2,000 examples
into a scratch run directory (rebuilt each time, so it reflects the current
library; evaluation speed does not depend on how well the weights are trained).

`--impl tfsft`: what `tfsft evaluate RUN` runs, in a fresh process: the run
loaded with `tfsft.run_dir.load_run`, SST-2 dev (the config's validation file)
tokenized, then the task's `evaluate` (forward passes, metrics, confusion
matrix) timed over `--passes` passes. The first pass includes tracing the
forward function; examples/s is the median of the later passes, as training's
excludes its warm-up steps; examples per CPU second likewise, from the
process's CPU time (fairer when other jobs share the cores).

`--impl keras_predict`: the same split and model through what evaluation used
before: `model.predict` on batches in file order, each padded to its longest.

`--rows train`: evaluates 2,000 rows of the *training* file instead of the dev
set (the last 2,000, which the 5-step run did not train on). SST-2's dev
sentences are whole reviews, 25.2 word pieces on average, against 13.2 for the
training phrases, so dev examples cost twice the compute of the examples the
training benchmark counts; training rows compare like with like.

    python benchmarks/bench_tfsft_evaluate.py --prepare
    python benchmarks/bench_tfsft_evaluate.py --impl tfsft --passes 4
    python benchmarks/bench_tfsft_evaluate.py --impl tfsft --passes 4 --rows train
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import CONFIG, SCRATCH, data_dir, emit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="train 5 steps into --run-dir (run.py: once per run)")
    parser.add_argument("--impl", choices=["tfsft", "keras_predict"])
    parser.add_argument("--run-dir", default=str(SCRATCH / "evaluate_run"))
    parser.add_argument("--passes", type=int, default=4, help="timed passes over the split (the first traces)")
    parser.add_argument("--batch-size", type=int, help="default: the config's train.eval_batch_size")
    parser.add_argument("--rows", choices=["dev", "train"], default="dev",
                        help="SST-2 dev (872 sentences) or the last 2,000 training rows (as long as training's)")
    args = parser.parse_args(argv)
    if not args.prepare and not args.impl:
        parser.error("give --prepare or --impl")
    if args.passes < 2:
        parser.error(f"--passes must be ≥ 2 (the first one traces). Received: {args.passes}")
    return args


def prepare(run_dir: Path) -> None:
    """A fresh 5-step run of the shipped config on 2,000 training examples (no validation while training)."""
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    from tfsft.experiment import load_config
    from tfsft.training import train

    shutil.rmtree(run_dir, ignore_errors=True)
    base = load_config(CONFIG)
    config = load_config(CONFIG, [
        "train.max_steps=5", f"run_dir={run_dir}", "train.verbose=0", "data.max_examples=2000",
        "data.files=" + json.dumps({"train": base.data.files["train"]}),
    ])
    train(config, log=lambda line: print(line, file=sys.stderr))


def main(argv=None) -> None:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.prepare:
        prepare(run_dir)
        emit({"name": "evaluate_prepare", "run_dir": str(run_dir)})
        return
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    import keras

    from tfsft.data.pipeline import evaluation_dataset
    from tfsft.experiment import load_config
    from tfsft.models import fast_matmul
    from tfsft.run_dir import load_run

    files = load_config(CONFIG).data.files  # the run trained without a validation file
    validation = files["validation"] if args.rows == "dev" else files["train"] + "[-2000:]"
    with fast_matmul.fast_projections():  # as tfsft.training.evaluate runs
        loaded = load_run(run_dir, overrides=[f"data.files.validation={validation}"])
        config = loaded.config
        keras.mixed_precision.set_dtype_policy(config.train.precision)
        examples = loaded.task.read("validation")
        encoder = loaded.task.make_encoder(loaded.tokenizer, config.model.sequence_length)
        encoded = loaded.task.encode(examples, encoder, training=False)
        batch_size = args.batch_size or config.train.eval_batch_size
        if args.impl == "tfsft":
            def one_pass():
                loaded.task.evaluate(loaded.model, examples, encoded, encoder, batch_size, SCRATCH / "evaluate_out")
        else:
            in_order = encoded.dataset.map(lambda x, *_: x).padded_batch(batch_size)

            def one_pass():
                loaded.model.predict(in_order, verbose=0)
        seconds, cpu_seconds = [], []
        for _ in range(args.passes):
            start, cpu_start = time.perf_counter(), time.process_time()
            one_pass()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
    steady = statistics.median(seconds[1:])
    emit({
        "name": f"evaluate_{args.impl}" + ("_train_rows" if args.rows == "train" else ""),
        "examples": len(examples),
        "batch_size": batch_size,
        "passes": args.passes,
        "examples_per_s": len(examples) / steady,
        "examples_per_cpu_s": len(examples) / statistics.median(cpu_seconds[1:]),
        "first_pass_examples_per_s": len(examples) / seconds[0],
        "mean_real_length": encoded.mean_tokens,
        "precision": config.train.precision,
    })


if __name__ == "__main__":
    main()
