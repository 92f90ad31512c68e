"""Peak matmul FLOP/s of this machine in TensorFlow, at float32 and bfloat16.

The denominator of MFU (model FLOPs utilisation, see flops.py): an n × n by
n × n matmul costs 2·n³ FLOPs; the peak is the best of `--iterations` timed
calls (after one untimed call), measured in the same `run.py` run as the
training throughput so both see the same machine load. bfloat16 uses AMX
(oneDNN) where the CPU has it.

    python benchmarks/bench_mfu.py --size 2048 --iterations 10
"""

from __future__ import annotations

import argparse
import time

from common import emit, percentile


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="n of the n × n matrices")
    parser.add_argument("--iterations", type=int, default=10)
    return parser.parse_args(argv)


def matmul_flops_per_s(size: int, dtype: str, iterations: int) -> tuple[float, float]:
    """(best, median) FLOP/s of a `size`² matmul in `dtype` over `iterations` calls."""
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(1, 2), dtype=tf.float32)
    b = tf.random.stateless_normal((size, size), seed=(3, 4), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    # Summing the product keeps it from being pruned; n² adds next to 2·n³ FLOPs.
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()  # trace + warm-up
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        matmul(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return flops / min(seconds), flops / percentile(seconds, 50)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = {"name": "matmul_peak", "size": args.size, "iterations": args.iterations}
    for key, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        best, median = matmul_flops_per_s(args.size, dtype, args.iterations)
        result[f"{key}_peak_flops_per_s"] = best
        result[f"{key}_median_flops_per_s"] = median
    emit(result)


if __name__ == "__main__":
    main()
