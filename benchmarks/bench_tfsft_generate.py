"""Generation speed of the shipped SavedModel: SmolLM2-135M-Instruct, greedy, exactly N new tokens.

`--prepare`: trains configs/codealpaca_smollm2.yaml for 1 step on 16 examples
(no validation split, so no generation in evaluation; learning rate 1e-12, so
the weights stay the GGUF file's and the peers run the same model) into a
scratch run, exports it with `tfsft.export.export` (the shipped SavedModel;
only the fresh-process check is skipped) and writes `prompt.json` beside it:
the user message, its ChatML rendering, tfsft's prompt ids and the GGUF file,
which the peers (`bench_hf_generate.py`, `bench_llamacpp_generate.py`)
tokenize the prompt against.

`--impl savedmodel`: in a process with only TensorFlow + TF Text imported (what
TF Serving has), the `generate` signature (temperature 0: greedy) on B copies
of the prompt. The signature always stops at `<|im_end|>`/eos, so the prompt
is one whose greedy answer is longer than 128 tokens, and every call checks
that each row made exactly N tokens (`num_tokens`), failing loudly otherwise.
One untimed warm-up call, then `--repeats` timed calls: tokens/s = B × N ÷ the
median seconds per call (prompt processing included).

The peers import `PROMPT_FILE`, `check_exact` and `result` from here (standard
library only at module level).

    .venv/bin/python benchmarks/bench_tfsft_generate.py --prepare
    .venv/bin/python benchmarks/bench_tfsft_generate.py --impl savedmodel --batch 8 --new-tokens 128 --repeats 3
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

from common import REPO, SCRATCH, data_dir, emit

LLM_CONFIG = REPO / "configs" / "codealpaca_smollm2.yaml"
RUN_DIR = SCRATCH / "generate_run"
PROMPT_FILE = RUN_DIR / "prompt.json"
# Greedy SmolLM2-135M-Instruct answers this without an end token in its first 400 tokens (checked).
PROMPT = "Write a long, detailed essay about the history of the Roman Empire."


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="train 1 step and export (run.py: once per run)")
    parser.add_argument("--impl", choices=["savedmodel"])
    add_generation_args(parser)
    args = parser.parse_args(argv)
    if not args.prepare and not args.impl:
        parser.error("give --prepare or --impl")
    check_generation_args(parser, args)
    return args


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """`--batch`, `--new-tokens`, `--repeats`: the same in all three scripts."""
    parser.add_argument("--batch", type=int, default=1, help="copies of the prompt generated together")
    parser.add_argument("--new-tokens", type=int, default=128, help="exactly this many tokens per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up call")


def check_generation_args(parser: argparse.ArgumentParser, args) -> None:
    for name in ("batch", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1. Received: {getattr(args, name)}")


def check_exact(num_tokens, expected: int) -> None:
    """Raises RuntimeError unless every row made exactly `expected` tokens (none stopped at an end token)."""
    counts = [int(n) for n in num_tokens]
    if not counts or any(n != expected for n in counts):
        raise RuntimeError(f"expected {expected} new tokens in every row, got {counts}: generation stopped "
                           f"early (an end token), so tokens/s would count fewer tokens than the loop ran")


def machine() -> dict:
    """CPU model, cores and its bf16/AMX flags (from /proc/cpuinfo)."""
    cpu, flags = "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    return {"cpu": cpu, "cores": os.cpu_count(),
            "bf16_flags": ", ".join(sorted(f for f in flags if f.startswith("amx") or f == "avx512_bf16")) or "none"}


def result(name: str, batch: int, new_tokens: int, prompt_tokens: int, seconds: list[float], load_start: float,
           **extra) -> dict:
    """The common record: tokens/s = batch × new tokens ÷ the median seconds per call, and the context."""
    median = statistics.median(seconds)
    return {"name": name, "batch": batch, "new_tokens": new_tokens, "prompt_tokens": prompt_tokens,
            "repeats": len(seconds), "seconds_per_call": median, "seconds_all": seconds,
            "tokens_per_s": batch * new_tokens / median,
            "load_average_start": load_start, "load_average_end": os.getloadavg()[0], **machine(), **extra}


def read_prompt_file(path: Path = PROMPT_FILE) -> dict:
    if not path.exists():
        sys.exit(f"{path} is missing; run `bench_tfsft_generate.py --prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))


def prepare(run_dir: Path) -> Path:
    """A fresh 1-step run of the SmolLM2 config, exported, with `prompt.json`; returns the SavedModel folder."""
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    import tensorflow as tf

    from tfsft.experiment import load_config
    from tfsft.export import export
    from tfsft.models.gguf import resolve_gguf
    from tfsft.run_dir import load_run
    from tfsft.training import train

    shutil.rmtree(run_dir, ignore_errors=True)
    base = load_config(LLM_CONFIG)
    config = load_config(LLM_CONFIG, [
        "train.max_steps=1", f"run_dir={run_dir}", "train.verbose=0", "data.max_examples=16",
        "train.learning_rate=1e-12", "data.files=" + json.dumps({"train": base.data.files["train"]}),
    ])
    train(config, log=lambda line: print(line, file=sys.stderr))
    saved = export(run_dir, verify=False, log=lambda line: print(line, file=sys.stderr))
    loaded = load_run(run_dir)
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    text = encoder.template.render_prompts(tf.constant([PROMPT]), encoder.system)[0].numpy().decode("utf-8")
    (run_dir / "prompt.json").write_text(json.dumps({
        "prompt": PROMPT, "text": text, "token_ids": encoder.prompt_ids([PROMPT])[0].numpy().tolist(),
        "stop_ids": list(encoder.stop_ids), "gguf": str(resolve_gguf(loaded.config.model.backbone)),
        "saved_model": str(saved)}, indent=1), encoding="utf-8")
    return saved


def savedmodel(args) -> dict:
    """Times the SavedModel's `generate` signature, loaded as TF Serving would."""
    load_start = os.getloadavg()[0]
    prompt = read_prompt_file()
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    assert "tfsft" not in sys.modules and "keras_hub" not in sys.modules
    fn = tf.saved_model.load(prompt["saved_model"]).signatures["generate"]
    knobs = {"max_new_tokens": tf.constant(args.new_tokens, tf.int32), "temperature": tf.constant(0.0),
             "top_k": tf.constant(0), "top_p": tf.constant(1.0), "seed": tf.constant(0, tf.int64)}
    prompts = tf.constant([prompt["prompt"]] * args.batch)

    def call() -> float:
        start = time.perf_counter()
        out = {k: v.numpy() for k, v in fn(prompt=prompts, **knobs).items()}
        seconds = time.perf_counter() - start
        check_exact(out["num_tokens"], args.new_tokens)
        return seconds

    call()  # warm-up (graph optimization, allocations)
    seconds = [call() for _ in range(args.repeats)]
    return result(f"generate_tfsft_b{args.batch}", args.batch, args.new_tokens, len(prompt["token_ids"]), seconds,
                  load_start, impl="tfsft SavedModel (generate signature)", tensorflow=tf.__version__)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.prepare:
        emit({"name": "generate_prepare", "saved_model": str(prepare(RUN_DIR))})
        return
    emit(savedmodel(args))


if __name__ == "__main__":
    main()
