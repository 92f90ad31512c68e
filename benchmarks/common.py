"""What every benchmark script shares; standard library only.

The scripts run in two environments — the project's `.venv` (TensorFlow) and
`.venv-bench` (PyTorch + Hugging Face) — so this module imports nothing else.

Protocol: a script prints exactly one line `BENCH_RESULT {json}` on stdout;
`run.py` reads the last such line and ignores everything else.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "
CONFIG = REPO / "configs" / "sst2_minilm.yaml"  # what "tfsft as configured" means
SCRATCH = Path(os.environ.get("TFSFT_BENCH_SCRATCH", "/tmp/tfsft-bench"))


def data_dir() -> Path:
    """The shared datasets: `$TFSFT_DATA_DIR`, else `../shared/data` beside the repo."""
    return Path(os.environ.get("TFSFT_DATA_DIR") or REPO.parent / "shared" / "data")


def sst2_path(split: str = "train") -> Path:
    """`<data>/sst2/<split>.tsv`; exits with a clear message when it is missing."""
    path = data_dir() / "sst2" / f"{split}.tsv"
    if not path.exists():
        sys.exit(f"SST-2 not found at {path}; set TFSFT_DATA_DIR to the folder holding sst2/")
    return path


def read_sst2(split: str = "train", limit: Optional[int] = None) -> tuple[list[str], list[int]]:
    """SST-2 sentences and 0/1 labels from the GLUE TSV (header `sentence<TAB>label`).

    Args:
        split: `train` or `dev`.
        limit: keep the first `limit` rows (all when None).

    Returns:
        (texts, labels), two lists of equal length.
    """
    texts, labels = [], []
    with open(sst2_path(split), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            texts.append(row["sentence"])
            labels.append(int(row["label"]))
            if limit is not None and len(texts) >= limit:
                break
    return texts, labels


def emit(result: dict) -> None:
    """Prints the result line that `run.py` collects."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StepClock:
    """Wall-clock time of training steps after a warm-up.

    Call `tick()` at the end of every step; steps `warmup+1 … warmup+steps`
    are timed (from the end of step `warmup` to the end of the last one), in
    wall-clock seconds and in CPU seconds of the process (all its threads:
    a fairer measure of the work when other jobs share the cores).

    Args:
        warmup: steps before timing starts (graph tracing, allocator warm-up).
        steps: timed steps.
    """

    def __init__(self, warmup: int, steps: int):
        self.warmup = warmup
        self.steps = steps
        self.done = 0
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        self.cpu_start = self.cpu_end = 0.0

    def tick(self) -> None:
        self.done += 1
        if self.done == self.warmup:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
        elif self.done == self.warmup + self.steps:
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def seconds(self) -> float:
        self._check_finished()
        return self.end - self.start

    @property
    def cpu_seconds(self) -> float:
        self._check_finished()
        return self.cpu_end - self.cpu_start

    def _check_finished(self) -> None:
        if self.start is None or self.end is None:
            raise RuntimeError(f"timed {self.done} of {self.warmup} + {self.steps} steps; the run stopped early")


def training_result(name: str, clock: StepClock, batch_size: int, real_tokens: int, padded_tokens: int,
                    **extra) -> dict:
    """The common training record: examples/s, real and padded tokens/s, mean lengths.

    Args:
        name: the measurement's name.
        clock: the finished step clock.
        batch_size: examples per step.
        real_tokens: non-padding tokens in the timed batches (Σ padding_mask).
        padded_tokens: all positions in the timed batches (Σ batch × length).
        **extra: more fields (precision, model sizes, ...).
    """
    seconds = clock.seconds
    examples = clock.steps * batch_size
    return {
        "name": name,
        "seconds": seconds,
        "steps": clock.steps,
        "warmup_steps": clock.warmup,
        "batch_size": batch_size,
        "examples_per_s": examples / seconds,
        "examples_per_cpu_s": examples / clock.cpu_seconds,
        "real_tokens_per_s": real_tokens / seconds,
        "padded_tokens_per_s": padded_tokens / seconds,
        "mean_real_length": real_tokens / examples,
        "mean_padded_length": padded_tokens / examples,
        **extra,
    }
