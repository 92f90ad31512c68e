"""Serving speed: the exported SavedModel (strings in) against the Keras model (ids in).

`--prepare`: trains configs/sst2_minilm.yaml for 5 steps into a scratch
run directory and exports it with `tfsft.export.export` (rebuilt each time,
so it reflects the current library). Serving speed does not depend on how
well the weights are trained, only on the graph.

`--impl savedmodel`: loads `serving_default` with only TensorFlow + TF Text
imported (what TF Serving has) and sends raw SST-2 dev sentences; the
tokenizer runs inside the graph.

`--impl keras`: loads the run's `model.keras` and calls `predict_on_batch`
(Keras's compiled path) on the same batches, tokenized beforehand with the
run's `TextEncoder` (untimed) — the strongest Keras baseline.

Both: warm-up calls first (tracing), then p50/p99 latency over `--requests`
calls at batch 1, and examples/s over `--batches` calls at batch 32.

    python benchmarks/bench_serving.py --prepare
    python benchmarks/bench_serving.py --impl savedmodel --requests 150 --batches 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import CONFIG, SCRATCH, data_dir, emit, percentile, read_sst2

BATCH_SIZE = 32
WARMUP_CALLS = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="train 5 steps and export (run.py: once per run)")
    parser.add_argument("--impl", choices=["savedmodel", "keras"])
    parser.add_argument("--run-dir", default=str(SCRATCH / "serving_run"))
    parser.add_argument("--requests", type=int, default=150, help="batch-1 calls for the latency percentiles")
    parser.add_argument("--batches", type=int, default=15, help="batch-32 calls for the throughput")
    args = parser.parse_args(argv)
    if not args.prepare and not args.impl:
        parser.error("give --prepare or --impl")
    return args


def prepare(run_dir: Path) -> Path:
    """A fresh 5-step run of the shipped config (on 2,000 examples), exported; returns the SavedModel folder.

    Always rebuilt, so the export reflects the current library and config.
    """
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    from tfsft.experiment import load_config
    from tfsft.export import export
    from tfsft.training import train

    shutil.rmtree(run_dir, ignore_errors=True)
    base = load_config(CONFIG)
    config = load_config(CONFIG, [
        "train.max_steps=5", f"run_dir={run_dir}", "train.verbose=0", "data.max_examples=2000",
        "data.files=" + json.dumps({"train": base.data.files["train"]}),
    ])
    train(config, log=lambda line: print(line, file=sys.stderr))
    # The export's own fresh-process check is tested elsewhere; here it would only cost time.
    return export(run_dir, verify=False, log=lambda line: print(line, file=sys.stderr))


def requests(count_1: int, batches: int) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """(warm-up, batch-1, batch-32) request lists from the SST-2 dev sentences, cycled as needed."""
    texts, _ = read_sst2("dev")

    def take(start: int, count: int, size: int) -> list[list[str]]:
        return [[texts[(start + i * size + j) % len(texts)] for j in range(size)] for i in range(count)]

    warmup = take(len(texts) // 2, WARMUP_CALLS, 1) + take(0, 3, BATCH_SIZE)
    return warmup, take(0, count_1, 1), take(0, batches, BATCH_SIZE)


def timed_calls(call, inputs: list) -> list[float]:
    """Seconds per call, each call's outputs brought to the host."""
    seconds = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        seconds.append(time.perf_counter() - start)
    return seconds


def savedmodel_caller(run_dir: Path):
    """`serving_default` on a list of strings, loaded the way TF Serving would."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    saved = sorted(run_dir.glob("export/*/*/saved_model.pb"))
    if not saved:
        sys.exit(f"{run_dir}: no export; run `bench_serving.py --prepare` first")
    fn = tf.saved_model.load(str(saved[-1].parent)).signatures["serving_default"]

    def call(batch):
        return {k: v.numpy() for k, v in fn(text=tf.constant(batch)).items()}

    return lambda batch: batch, call


def keras_caller(run_dir: Path):
    """(pre-tokenize, predict_on_batch) for the run's Keras model."""
    import tensorflow as tf

    from tfsft.run_dir import load_run

    loaded = load_run(run_dir)
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    names = list(loaded.model.input)

    def tokenize(batch):
        features, _ = encoder(tf.constant(batch))
        return {k: features[k].numpy() for k in names}

    return tokenize, loaded.model.predict_on_batch


def main(argv=None) -> None:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.prepare:
        emit({"name": "serving_prepare", "saved_model": str(prepare(run_dir))})
        return
    tokenize, call = (savedmodel_caller if args.impl == "savedmodel" else keras_caller)(run_dir)
    warmup, single, batched = requests(args.requests, args.batches)
    warmup, single, batched = ([tokenize(b) for b in group] for group in (warmup, single, batched))
    timed_calls(call, warmup)
    latency = timed_calls(call, single)
    throughput = timed_calls(call, batched)
    emit({
        "name": f"serving_{args.impl}",
        "requests": args.requests,
        "batches": args.batches,
        "p50_ms": 1000 * percentile(latency, 50),
        "p99_ms": 1000 * percentile(latency, 99),
        "batch1_per_s": 1 / percentile(latency, 50),
        "batch32_examples_per_s": BATCH_SIZE * len(throughput) / sum(throughput),
    })


if __name__ == "__main__":
    main()
