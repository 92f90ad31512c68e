"""Export precision: SavedModel size, batch-1 latency, batch-32 throughput and SST-2 dev accuracy
of one run exported at each weight precision (`export.dtype`, `export.quantize`).

Each export goes to a scratch folder (`--out`), is loaded with
`tf.saved_model.load` and called through `serving_default` (strings in, the
tokenizer in the graph), warmed up, then timed: p50/p99 over `--requests`
single-sentence calls and examples/s over `--batches` calls of 32 dev
sentences; accuracy over the whole dev set (batches of 64).

    TFSFT_DATA_DIR=../shared/data python benchmarks/bench_export_precision.py runs/sst2_minilm_lora
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import SCRATCH, data_dir, emit, percentile, read_sst2

SETTINGS = {  # name → --set overrides of the export
    "as trained": [],
    "float32": ["export.dtype=float32"],
    "bfloat16": ["export.dtype=bfloat16"],
    "int8": ["export.quantize=int8"],
    "int8 weight-only": ["export.quantize=int8_weight_only"],
}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(saved: Path, texts: list[str], labels: list[int], requests: int, batches: int) -> dict:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    fn = tf.saved_model.load(str(saved)).signatures["serving_default"]

    def call(batch):
        return {k: v.numpy() for k, v in fn(text=tf.constant(batch)).items()}

    for i in range(10):
        call([texts[i]])
    call(texts[:32])
    single = []
    for i in range(requests):
        start = time.perf_counter()
        call([texts[i % len(texts)]])
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(batches):
        call(texts[32 * i: 32 * (i + 1)])
    throughput = 32 * batches / (time.perf_counter() - start)
    predicted = []
    for i in range(0, len(texts), 64):
        predicted += call(texts[i:i + 64])["label_id"].tolist()
    accuracy = sum(int(p == y) for p, y in zip(predicted, labels)) / len(labels)
    return {"p50_ms": 1000 * percentile(single, 50), "p99_ms": 1000 * percentile(single, 99),
            "batch32_examples_per_s": throughput, "dev_accuracy": accuracy}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=str(SCRATCH / "export_precision"))
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--setting", action="append", choices=list(SETTINGS), help="default: all")
    args = parser.parse_args(argv)
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    from tfsft.export import export

    texts, labels = read_sst2("dev")
    rows = []
    for name in args.setting or SETTINGS:
        out = Path(args.out) / name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        saved = export(args.run_dir, verify=False, log=lambda line: print(line, file=sys.stderr),
                       overrides=[*SETTINGS[name], f"export.export_dir={out}"])
        row = {"precision": name, "export_s": time.perf_counter() - start, "saved_model_mb": folder_bytes(saved) / 1e6,
               "variables_mb": folder_bytes(saved / "variables") / 1e6,
               **measure(saved, texts, labels, args.requests, args.batches)}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    base = rows[0]
    print("| precision | SavedModel MB | variables MB (× first) | batch-1 p50 ms | p99 ms | batch-32 ex/s | dev acc |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['precision']} | {r['saved_model_mb']:.1f} | {r['variables_mb']:.1f} "
              f"({r['variables_mb'] / base['variables_mb']:.2f}) | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {r['batch32_examples_per_s']:.0f} | {100 * r['dev_accuracy']:.2f} |")
    emit({"name": "export_precision", "rows": rows})


if __name__ == "__main__":
    main()
