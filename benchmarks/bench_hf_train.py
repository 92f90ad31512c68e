"""Training throughput of Hugging Face Transformers on PyTorch (CPU) at its best settings.

`BertForSequenceClassification.from_pretrained(<MiniLM folder>)`, the fast
tokenizer from the same folder, dynamic padding (`DataCollatorWithPadding`:
each batch padded to its own longest example), bf16 autocast
(`torch.autocast("cpu", dtype=torch.bfloat16)`, AMX where the CPU has it),
AdamW + linear warm-up, gradient clipping at 1.0 (as tfsft), batch 32 and
`torch.set_num_threads(<cores>)`. A plain loop, which is what `Trainer` runs
minus its logging. Runs in `.venv-bench` (torch is never a tfsft dependency).

Two options a Hugging Face user turns on for speed (each off by default):
`--group-by-length` orders the examples with transformers' own
`LengthGroupedSampler` (what `Trainer` uses for `group_by_length=True`,
`train_sampling_strategy="group_by_length"` in Transformers 5: random
megabatches of 50 batches, each sorted by length), so a batch pads less;
`--compile` trains `torch.compile(model)` (what `torch_compile=True` does,
backend inductor). The result records both (`group_by_length`, `compiled`)
and `warmup_seconds` (the warm-up's wall time: compiling happens there). When
compiling fails the script exits with the error on its last stderr line (no
result), which `run.py` lists under Failures.

OpenMP: on a machine busier than its core count, PyTorch's spin-waiting
OpenMP threads slow it down several-fold (measured 1.2 vs 7.9 examples/s at a
load average of 11 on 2 cores), so `--omp-wait-policy auto` sets
`OMP_WAIT_POLICY=PASSIVE` then (the peer's best setting there) and leaves
the default otherwise; the result records which.

    .venv-bench/bin/python benchmarks/bench_hf_train.py --model-dir <folder> --warmup-steps 10 --steps 120
    .venv-bench/bin/python benchmarks/bench_hf_train.py --model-dir <folder> --group-by-length --compile
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from common import StepClock, emit, read_sst2, training_result
from flops import bert_config

SEQUENCE_LENGTH = 128
BATCH_SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="the Hugging Face-format MiniLM folder")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--omp-wait-policy", choices=["auto", "default", "PASSIVE", "ACTIVE"], default="auto")
    parser.add_argument("--group-by-length", action="store_true",
                        help="batch order from transformers' LengthGroupedSampler")
    parser.add_argument("--compile", action="store_true", help="train torch.compile(model)")
    return parser.parse_args(argv)


def result_name(args) -> str:
    """The measurement's name: `hf_train_<precision>[_grouped][_compiled]` (run.py's names)."""
    return (f"hf_train_{args.precision}" + ("_grouped" if args.group_by_length else "")
            + ("_compiled" if args.compile else ""))


def omp_wait_policy(choice: str) -> str:
    """Sets `OMP_WAIT_POLICY` (before torch starts OpenMP); returns the policy in force."""
    if choice == "auto":
        choice = "PASSIVE" if os.getloadavg()[0] > (os.cpu_count() or 1) else "default"
    if choice != "default":
        os.environ["OMP_WAIT_POLICY"] = choice
    return os.environ.get("OMP_WAIT_POLICY", "default")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings; tokenizing is untimed
    wait_policy = omp_wait_policy(args.omp_wait_policy)
    import torch
    from transformers import (AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding,
                              get_linear_schedule_with_warmup)
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from transformers.utils import logging

    logging.set_verbosity_error()  # "newly initialized classifier weights" is expected
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    total_steps = args.warmup_steps + args.steps

    texts, labels = read_sst2("train")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    encoded = tokenizer(texts, truncation=True, max_length=SEQUENCE_LENGTH)
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    generator = torch.Generator().manual_seed(args.seed)
    if args.group_by_length:
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = list(LengthGroupedSampler(BATCH_SIZE, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(texts), generator=generator).tolist()

    def batch(step: int) -> dict:
        rows = [order[(step * BATCH_SIZE + i) % len(order)] for i in range(BATCH_SIZE)]
        features = [{key: encoded[key][r] for key in encoded} | {"labels": labels[r]} for r in rows]
        return collate(features)

    model = BertForSequenceClassification.from_pretrained(args.model_dir, num_labels=2)
    model.train()
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, int(0.06 * total_steps)), total_steps)

    clock = StepClock(args.warmup_steps, args.steps)
    real_tokens = padded_tokens = 0
    started = time.perf_counter()
    try:
        for step in range(total_steps):
            inputs = batch(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = forward(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick()
            if step >= args.warmup_steps:
                real_tokens += int(inputs["attention_mask"].sum())
                padded_tokens += inputs["attention_mask"].numel()
    except Exception as e:  # compiling happens on the first calls (and on recompiles), inside the loop
        if not args.compile:
            raise
        traceback.print_exc()
        message = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())[:600]
        sys.exit(f"torch.compile failed on this machine at step {step + 1}: {type(e).__name__}: {message}")

    emit(training_result(
        result_name(args), clock, BATCH_SIZE, real_tokens=real_tokens, padded_tokens=padded_tokens,
        precision=args.precision, threads=args.threads, omp_wait_policy=wait_policy,
        group_by_length=args.group_by_length, compiled=args.compile, warmup_seconds=clock.start - started,
        sequence_length=SEQUENCE_LENGTH,
        **bert_config(args.model_dir),
    ))


if __name__ == "__main__":
    main()
