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
calls at batch 1, and examples/s over `--batches` calls at batch 32. The
result records the load average at start and end, the CPU and the versions.

`--run-dir` times another run instead of the scratch one, e.g. the
fine-tuned `runs/sst2_minilm` (its newest `export/<name>/<version>`), against
Hugging Face's `pipeline` on the same weights (`bench_hf_serving.py`).

    python benchmarks/bench_serving.py --prepare
    python benchmarks/bench_serving.py --impl savedmodel --requests 150 --batches 15
    python benchmarks/bench_serving.py --impl savedmodel --run-dir runs/sst2_minilm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    parser.add_argument("--run-dir", default=str(SCRATCH / "serving_run"),
                        help="the run to serve (default: --prepare's scratch run; e.g. runs/sst2_minilm)")
    parser.add_argument("--requests", type=int, default=150, help="batch-1 calls for the latency percentiles")
    parser.add_argument("--batches", type=int, default=15, help="batch-32 calls for the throughput")
    args = parser.parse_args(argv)
    if not args.prepare and not args.impl:
        parser.error("give --prepare or --impl")
    if args.requests < 1 or args.batches < 1:
        parser.error(f"--requests and --batches must be ≥ 1. Received: {args.requests}, {args.batches}")
    return args


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as run.py writes them."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def machine(packages: tuple[str, ...]) -> dict:
    """CPU, cores, bf16 instructions and the versions of `packages` (standard library only; imports nothing)."""
    from importlib import metadata

    cpu, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(),
            "bf16_instructions": ", ".join(sorted(flags & {"amx_bf16", "avx512_bf16"})) or "none",
            "python": platform.python_version(), "versions": versions}


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

    fn = tf.saved_model.load(str(newest_export(run_dir))).signatures["serving_default"]

    def call(batch):
        return {k: v.numpy() for k, v in fn(text=tf.constant(batch)).items()}

    return lambda batch: batch, call


def newest_export(run_dir: Path) -> Path:
    """The highest-numbered `export/<model_name>/<version>` SavedModel of a run (exits when there is none)."""
    saved = [p.parent for p in run_dir.glob("export/*/*/saved_model.pb") if p.parent.name.isdigit()]
    if not saved:
        sys.exit(f"{run_dir}: no export; run `bench_serving.py --prepare` (or `tfsft export {run_dir}`) first")
    return max(saved, key=lambda p: int(p.name))


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
    load_start = load_average()
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
        "run_dir": str(run_dir),
        "saved_model": str(newest_export(run_dir)) if args.impl == "savedmodel" else None,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "machine": machine(("tensorflow", "tensorflow-text", "keras", "keras-hub")),
    })


if __name__ == "__main__":
    main()
