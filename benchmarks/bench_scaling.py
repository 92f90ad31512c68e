"""How cost grows: training step time and forward latency of MiniLM-L6 against sequence length and batch size.

The model is the quickstart's (`configs/sst2_minilm.yaml`: the text classifier on
the offline MiniLM-L6, `train.precision`, tfsft's optimizer, inside
`fast_projections` as `tfsft train` runs). Every (batch, length) cell gets
synthetic token ids with no padding, so each position is real work:

* training: `model.train_on_batch`, the median of `--steps` calls after 2 warm-up
  calls (the first traces the shape);
* forward: one `tf.function` of `model(x, training=False)` (the exported serving
  function's core, token ids in, no tokenizer), the median of `--calls` calls.

Per token, a training step costs 6·N + 12·L·d·T FLOPs (`flops.py`): the second
term, attention's QKᵀ and AV, grows with the length T, so the cost of a sequence
grows quadratically. The table gives that FLOP model's attention share beside
the measured time per token, and `scaling.png` plots both timings.

    python benchmarks/bench_scaling.py --out benchmarks/results/scaling
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import CONFIG, SCRATCH, emit
from flops import bert_config, training_flops_per_token


def timed(function, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls, after 2 untimed ones."""
    for _ in range(2):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def attention_share(sizes: dict, length: int) -> float:
    """12·L·d·T ÷ (6·N + 12·L·d·T): attention's part of a training step's model FLOPs."""
    total = training_flops_per_token(sizes["non_embedding_params"], sizes["num_layers"], sizes["hidden_dim"], length)
    return 12.0 * sizes["num_layers"] * sizes["hidden_dim"] * length / total


def table(cells: list[dict]) -> str:
    lines = ["| batch | length | training step ms | µs per token (training) | forward ms | µs per token (forward) "
             "| attention share of training FLOPs |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in cells:
        tokens = c["batch"] * c["length"]
        lines.append(f"| {c['batch']} | {c['length']} | {1e3 * c['train_s']:.1f} | {1e6 * c['train_s'] / tokens:.1f} "
                     f"| {1e3 * c['forward_s']:.1f} | {1e6 * c['forward_s'] / tokens:.1f} "
                     f"| {100 * c['attention_share']:.1f} % |")
    return "\n".join(lines)


def plot(cells: list[dict], path: Path) -> None:
    """Two panels: µs per token of a training step, and forward latency in ms, against length, one line per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for batch in sorted({c["batch"] for c in cells}):
        row = [c for c in cells if c["batch"] == batch]
        lengths = [c["length"] for c in row]
        left.plot(lengths, [1e6 * c["train_s"] / (batch * c["length"]) for c in row], marker="o", label=f"batch {batch}")
        right.plot(lengths, [1e3 * c["forward_s"] for c in row], marker="o", label=f"batch {batch}")
    lengths = sorted({c["length"] for c in cells})
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.set_xlabel("sequence length (tokens, no padding)")
        axis.grid(alpha=0.3)
        axis.legend()
    left.set_ylabel("training: µs per token")
    left.set_title("training cost per token (falling: fixed step cost shared; rising: attention)", fontsize=10)
    right.set_ylabel("forward latency, ms")
    right.set_title("forward pass latency (token ids in)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per cell")
    parser.add_argument("--calls", type=int, default=10, help="timed forward calls per cell")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--out", default=str(SCRATCH / "scaling"), help="table.md and scaling.png go here")
    args = parser.parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    from tfsft.experiment import load_config
    from tfsft.models import fast_matmul
    from tfsft.models.backbones import load_backbone, resolve_source
    from tfsft.optimization import make_optimizer
    from tfsft.tasks import get_task

    longest = max(args.lengths)
    config = load_config(args.config, [f"model.sequence_length={longest}"])
    keras.mixed_precision.set_dtype_policy(config.train.precision)
    sizes = bert_config(resolve_source(config.model.backbone))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    with fast_matmul.fast_projections():
        task = get_task(config)
        backbone, _ = load_backbone(config.model)
        model = task.build_model(backbone)
        model.compile(optimizer=make_optimizer(config.train, total_steps=10_000), loss=task.loss())
        names = list(model.input)
        spec = {k: tf.TensorSpec([None, None], "int32", name=k) for k in names}
        forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        rng = np.random.default_rng(0)
        for batch in args.batches:
            for length in args.lengths:
                x = {k: tf.ones((batch, length), tf.int32) for k in names}
                x["token_ids"] = tf.constant(rng.integers(1000, 20000, (batch, length)), tf.int32)
                if "segment_ids" in x:
                    x["segment_ids"] = tf.zeros((batch, length), tf.int32)
                y = tf.constant(rng.integers(0, 2, batch), tf.int32)
                cell = {"batch": batch, "length": length,
                        "train_s": timed(lambda: model.train_on_batch(x, y), args.steps),
                        "forward_s": timed(lambda: forward(x), args.calls),
                        "attention_share": attention_share(sizes, length)}
                print(cell, file=sys.stderr, flush=True)
                cells.append(cell)
    markdown = table(cells)
    (out / "table.md").write_text(markdown + "\n")
    plot(cells, out / "scaling.png")
    print(markdown)
    emit({"name": "scaling", "precision": config.train.precision, **sizes, "cells": cells})


if __name__ == "__main__":
    main()
