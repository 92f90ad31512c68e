"""Serving speed of Hugging Face `pipeline("text-classification")` on PyTorch (CPU), the same fine-tuned weights.

The peer of `bench_serving.py --impl savedmodel`: the tfsft run exported to a
Hugging Face folder by `export_hf_classifier.py` (`BertForSequenceClassification`,
the run's vocabulary and label names), served as a Transformers user would:
`pipeline("text-classification", model=<folder>, device="cpu")`, each request
one string (tokenizing, the forward pass and the softmax + label lookup timed,
as tfsft's `serving_default` does them in its graph), `top_k=None` (every
class's score: tfsft returns all probabilities), `truncation=True` (at the
run's `model.sequence_length`, the tokenizer's `model_max_length`).
The same requests as `bench_serving.py` (its `requests()`): 20 + 3 warm-up
calls, p50/p99 latency over `--requests` batch-1 calls and examples/s over
`--batches` calls of 32 sentences (`pipe(texts, batch_size=32)`: padded to
the batch's longest). Runs in `.venv-bench` (torch is never a tfsft dependency).

Settings (a user's speed options, each a separate measurement):
`--precision fp32` (the model as stored), `bf16` (`dtype=torch.bfloat16`:
weights and compute in bfloat16), `bf16_autocast` (float32 weights,
`torch.autocast("cpu", dtype=torch.bfloat16)` around each call); `--compile`
replaces the pipeline's model with `torch.compile(model, dynamic=True)`
(inductor; compiled during the warm-up, `warmup_seconds` in the result).
`torch.set_num_threads(--threads)` and `OMP_WAIT_POLICY` as in
`bench_hf_train.py` (`PASSIVE` when the load average exceeds the cores).

`--verify <folder>/tfsft_reference.json`: no timing; checks that the folder
tokenizes every SST-2 dev sentence to tfsft's token ids and that its float32
logits equal tfsft's float32 logits within `--tolerance` with the same
argmax, and that the pipeline returns the matching label names; reports the
bfloat16 model's largest difference too. Exits 1 when a check fails.

    .venv-bench/bin/python benchmarks/bench_hf_serving.py --model-dir <folder> --verify <folder>/tfsft_reference.json
    .venv-bench/bin/python benchmarks/bench_hf_serving.py --model-dir <folder> --precision fp32 --requests 150 --batches 15
    .venv-bench/bin/python benchmarks/bench_hf_serving.py --model-dir <folder> --precision fp32 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench_hf_train import omp_wait_policy
from bench_serving import BATCH_SIZE, load_average, machine, requests, timed_calls
from common import emit, percentile

PRECISIONS = ("fp32", "bf16", "bf16_autocast")
PACKAGES = ("torch", "transformers", "tokenizers", "safetensors")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="the folder export_hf_classifier.py wrote")
    parser.add_argument("--verify", metavar="JSON", help="check logits against tfsft's (tfsft_reference.json); no timing")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="--verify: largest float32 logit difference")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile(model, dynamic=True)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--omp-wait-policy", choices=["auto", "default", "PASSIVE", "ACTIVE"], default="auto")
    parser.add_argument("--requests", type=int, default=150, help="batch-1 calls for the latency percentiles")
    parser.add_argument("--batches", type=int, default=15, help="batch-32 calls for the throughput")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.batches < 1:
        parser.error(f"--requests and --batches must be ≥ 1. Received: {args.requests}, {args.batches}")
    if args.threads < 1:
        parser.error(f"--threads must be ≥ 1. Received: {args.threads}")
    if not args.tolerance > 0:
        parser.error(f"--tolerance must be > 0. Received: {args.tolerance}")
    if args.verify and (args.compile or args.precision != "fp32"):
        parser.error("--verify checks the float32 model (and reports bf16 itself); drop --precision/--compile")
    if not (Path(args.model_dir) / "config.json").is_file():
        parser.error(f"--model-dir: no config.json in {args.model_dir}; run export_hf_classifier.py first")
    return args


def result_name(args) -> str:
    """`serving_hf_<precision>[_compiled]`, or `serving_hf_verify`."""
    if args.verify:
        return "serving_hf_verify"
    return f"serving_hf_{args.precision}" + ("_compiled" if args.compile else "")


def verify(args) -> tuple[dict, bool]:
    """(result, passed): token ids, float32 logits and labels of the HF folder against tfsft's reference."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    ref = json.loads(Path(args.verify).read_text(encoding="utf-8"))
    texts, expected = ref["texts"], np.asarray(ref["logits_float32"], np.float64)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    all_texts, all_ids = ref.get("dev_texts", texts), ref.get("dev_token_ids", ref["token_ids"])
    ids = tokenizer(all_texts, truncation=True)["input_ids"]
    token_mismatches = [i for i, (a, b) in enumerate(zip(ids, all_ids)) if list(a) != list(b)]

    def logits(dtype) -> np.ndarray:
        model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, dtype=dtype).eval()
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            return model(**batch).logits.float().numpy().astype(np.float64)

    float32, bfloat16 = logits(torch.float32), logits(torch.bfloat16)
    diff = float(np.max(np.abs(float32 - expected)))
    labels_agree = float(np.mean(float32.argmax(-1) == expected.argmax(-1)))
    pipe = pipeline("text-classification", model=args.model_dir, device="cpu")
    names = [pipe(text, truncation=True)[0]["label"] for text in texts]
    expected_names = [ref["label_names"][i] for i in expected.argmax(-1)]
    as_trained = np.asarray(ref["logits_as_trained"], np.float64)
    result = {
        "name": "serving_hf_verify",
        "sentences": len(texts),
        "tokenized_sentences": len(all_texts),
        "token_ids_equal": not token_mismatches,
        "token_id_mismatches": token_mismatches[:10],
        "max_abs_logit_diff_fp32": diff,
        "max_abs_logit": float(np.max(np.abs(expected))),
        "tolerance": args.tolerance,
        "argmax_agreement_fp32": labels_agree,
        "pipeline_labels_agree": names == expected_names,
        "max_abs_logit_diff_bf16": float(np.max(np.abs(bfloat16 - expected))),
        "argmax_agreement_bf16": float(np.mean(bfloat16.argmax(-1) == expected.argmax(-1))),
        # tfsft as trained (its SavedModel's compute dtype) against tfsft in float32, for scale
        "tfsft_as_trained_dtype": ref.get("compute_dtype_as_trained"),
        "max_abs_logit_diff_tfsft_as_trained": float(np.max(np.abs(as_trained - expected))),
    }
    passed = (not token_mismatches and diff <= args.tolerance and labels_agree == 1.0
              and result["pipeline_labels_agree"])
    return result, passed


def make_pipeline(args):
    """(pipe, call): the text-classification pipeline at the chosen settings and one request's call."""
    import contextlib

    import torch
    from transformers import pipeline

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    pipe = pipeline("text-classification", model=args.model_dir, device="cpu", dtype=dtype)
    if args.compile:
        pipe.model = torch.compile(pipe.model, dynamic=True)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16_autocast" \
        else contextlib.nullcontext

    def call(batch: list[str]):
        with autocast():
            if len(batch) == 1:  # a server's request: one string
                return pipe(batch[0], top_k=None, truncation=True)
            return pipe(batch, batch_size=len(batch), top_k=None, truncation=True)

    return pipe, call


def main(argv=None) -> None:
    args = parse_args(argv)
    load_start = load_average()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    wait_policy = omp_wait_policy(args.omp_wait_policy)
    import torch
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    common = {"threads": args.threads, "omp_wait_policy": wait_policy, "model_dir": args.model_dir}
    if args.verify:
        result, passed = verify(args)
        emit({**result, **common, "load_average_start": load_start, "load_average_end": load_average(),
              "machine": machine(PACKAGES)})
        if not passed:
            sys.exit(f"verification failed: {json.dumps(result)}")
        return

    started = time.perf_counter()
    warmup, single, batched = requests(args.requests, args.batches)
    try:
        _, call = make_pipeline(args)
        timed_calls(call, warmup)
    except Exception as e:  # compiling happens on the first calls
        if not args.compile:
            raise
        traceback.print_exc()
        message = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())[:600]
        sys.exit(f"torch.compile failed on this machine: {type(e).__name__}: {message}")
    warmup_seconds = time.perf_counter() - started
    latency = timed_calls(call, single)
    throughput = timed_calls(call, batched)
    emit({
        "name": result_name(args),
        "requests": args.requests,
        "batches": args.batches,
        "p50_ms": 1000 * percentile(latency, 50),
        "p99_ms": 1000 * percentile(latency, 99),
        "batch1_per_s": 1 / percentile(latency, 50),
        "batch32_examples_per_s": BATCH_SIZE * len(throughput) / sum(throughput),
        "precision": args.precision,
        "compiled": args.compile,
        "warmup_seconds": warmup_seconds,
        **common,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "machine": machine(PACKAGES),
    })


if __name__ == "__main__":
    main()
