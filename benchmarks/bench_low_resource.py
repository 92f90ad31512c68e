"""Low-resource table: SST-2 dev accuracy after fine-tuning MiniLM-L6 on 100 … 67,349 training rows,
by full fine-tuning, LoRA r=8 and a linear probe (docs/efficient_finetuning.md).

Each cell is one `tfsft.training.train` run in this process, from the method's shipped config
(`configs/sst2_minilm.yaml`, `sst2_minilm_lora.yaml`, `sst2_minilm_linear_probe.yaml`) with:

- the training rows: a seeded random sample of `sst2/train.tsv` without replacement
  (`random.Random(seed).sample`), written to the scratch folder (never the repository);
  all rows for the last column;
- more `--set` overrides for one `--method`, a row of their own (e.g. another learning rate);
- a fixed budget in epochs, more for less data (`EPOCHS`: 20 epochs of 100 rows, 1 of all);
- no model selection on the dev set, which is what the table reports: the run monitors the
  training loss (`train.monitor: loss`), so the weights kept are those of the last interval
  (the lowest training loss); seed 0 validates 4 times to draw `curves.png`, other seeds once.

Results append to `--out/cells.jsonl` (one line per finished cell; a rerun skips those), and
the table (mean ± spread over seeds) is written to `--out/table.md`.

    TFSFT_DATA_DIR=../shared/data python benchmarks/bench_low_resource.py \\
        --out benchmarks/results/low_resource
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import REPO, SCRATCH, emit, sst2_path

METHODS = {  # name → its shipped config
    "full": "configs/sst2_minilm.yaml",
    "lora": "configs/sst2_minilm_lora.yaml",
    "probe": "configs/sst2_minilm_linear_probe.yaml",
}
LABELS = {"full": "full fine-tuning (lr 1e-4)", "lora": "LoRA r=8, query + value (lr 5e-4)",
          "probe": "linear probe on [CLS] (lr 1e-3)"}  # the shipped configs' settings
EPOCHS = {100: 20, 500: 8, 2000: 4, 10000: 2, 0: 1}  # rows (0 = all) → epochs
SEEDED_SIZES = (100, 500, 2000)  # the columns averaged over --seeds; larger ones take seed 0 alone


def sample_rows(size: int, seed: int, out: Path) -> Path:
    """Writes `size` rows of the SST-2 training TSV, sampled with `seed`, and returns the file."""
    with open(sst2_path("train"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    if size > len(body):
        sys.exit(f"--sizes: {size} rows asked for, {sst2_path('train')} has {len(body)}")
    path = out / f"train_{size}_seed{seed}.tsv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(random.Random(seed).sample(body, size))
    return path


def run_cell(method: str, size: int, seed: int, settings: list[str], scratch: Path) -> dict:
    """Trains one cell (the method's config with `settings`, more `--set` overrides) and returns its record:
    dev accuracy, steps, seconds, trainable weights, and `variant` (the settings as one string)."""
    variant = ", ".join(settings)
    from tfsft.experiment import load_config
    from tfsft.training import train

    run_dir = scratch / "runs" / "_".join(filter(None, (method, slug(variant), str(size or "all"), f"seed{seed}")))
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [f"run_dir={run_dir}", f"seed={seed}", f"train.epochs={EPOCHS[size]}", "train.monitor=loss",
                 *settings]
    if size:
        overrides.append(f"data.files.train={sample_rows(size, seed, scratch)}")
    batch_size = load_config(REPO / METHODS[method], overrides).train.batch_size
    steps = (size or 67349) // batch_size * EPOCHS[size]
    validate_every = max(1, steps // 4) if seed == 0 else steps  # seed 0: 4 validations for curves.png
    config = load_config(REPO / METHODS[method], [*overrides, f"train.eval_every_steps={validate_every}"])
    lines: list[str] = []
    result = train(config, log=lambda line: (lines.append(line), print(line, file=sys.stderr)))
    trainable = next((line.strip() for line in lines if "trainable" in line.lower()), "")
    return {"method": method, "variant": variant, "rows": size or 67349, "seed": seed, "epochs": EPOCHS[size],
            "steps": result.steps,
            "seconds": result.seconds, "dev_accuracy": result.metrics["accuracy"], "trainable": trainable,
            "run_dir": str(run_dir)}


def slug(variant: str) -> str:
    """`train.learning_rate=0.01, task.pooling=mean` → `train.learning_rate_0.01_task.pooling_mean` (a folder name)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", variant).strip("_")


def table(cells: list[dict], sizes: list[int]) -> str:
    """Markdown: one row per method and variant, one column per size; mean ± half the range over seeds."""
    columns = [size or 67349 for size in sizes]
    lines = ["| SST-2 dev accuracy (%) | " + " | ".join(f"{c:,} rows" for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for method in METHODS:
        for variant in sorted({c.get("variant", "") for c in cells if c["method"] == method} | {""}):
            row = []
            for rows in columns:
                scores = [100 * c["dev_accuracy"] for c in cells
                          if c["method"] == method and c.get("variant", "") == variant and c["rows"] == rows]
                if not scores:
                    row.append("—")
                elif len(scores) == 1:
                    row.append(f"{scores[0]:.2f}")
                else:
                    spread = (max(scores) - min(scores)) / 2
                    row.append(f"{statistics.mean(scores):.2f} ± {spread:.2f} ({len(scores)} seeds)")
            label = LABELS[method] + (f", with `{variant}`" if variant else "")
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(SCRATCH / "low_resource"), help="cells.jsonl and table.md go here")
    parser.add_argument("--method", action="append", choices=list(METHODS), help="default: all three")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000, 10000, 0],
                        help=f"training rows per column, 0 = all; one of {sorted(EPOCHS)}")
    parser.add_argument("--seeds", type=int, default=3, help=f"seeds for the {SEEDED_SIZES}-row columns")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides, for the one --method named (a row of its own)")
    args = parser.parse_args(argv)
    if args.set and len(args.method or METHODS) != 1:
        parser.error("--set: name the one --method it is for")
    for size in args.sizes:
        if size not in EPOCHS:
            parser.error(f"--sizes: {size} has no epoch budget; choose from {sorted(EPOCHS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = SCRATCH / "low_resource"
    scratch.mkdir(parents=True, exist_ok=True)
    done_path = out / "cells.jsonl"
    cells = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.exists() else []
    todo = [(method, size, seed) for size in args.sizes for method in args.method or METHODS
            for seed in range(args.seeds if size in SEEDED_SIZES else 1)]
    for number, (method, size, seed) in enumerate(todo, 1):
        variant = ", ".join(args.set)
        if any(c["method"] == method and c.get("variant", "") == variant and c["rows"] == (size or 67349)
               and c["seed"] == seed for c in cells):
            continue
        print(f"[{number}/{len(todo)}] {method} {variant}, {size or 'all'} rows, seed {seed}", file=sys.stderr,
              flush=True)
        start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        cell = {**run_cell(method, size, seed, args.set, scratch), "started": start}
        cells.append(cell)
        with open(done_path, "a") as f:
            f.write(json.dumps(cell) + "\n")
        if seed == 0:  # keep the curves of the seed-0 runs beside the table
            name = "_".join(filter(None, ("curves", method, slug(variant), str(size or "all"))))
            shutil.copy(Path(cell["run_dir"]) / "curves.png", out / f"{name}.png")
    markdown = table(cells, args.sizes)
    (out / "table.md").write_text(markdown + "\n")
    print(markdown)
    emit({"name": "low_resource", "cells": cells})


if __name__ == "__main__":
    main()
