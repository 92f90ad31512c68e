"""Generation speed of Hugging Face Transformers + PyTorch on the same GGUF file; runs in `.venv-bench`.

`AutoModelForCausalLM.from_pretrained(<folder>, gguf_file=<name>)` (dequantized
to `--dtype`) and `AutoTokenizer` from the same file. The prompt is the one of
`bench_tfsft_generate.py` (`prompt.json`, written by its `--prepare`), rendered
by the file's own chat template (`apply_chat_template`); its ids must equal
tfsft's. Greedy `generate(max_new_tokens=N, min_new_tokens=N, do_sample=False)`
(the end tokens are masked until N tokens are made) on B copies, under
`torch.inference_mode()` with `torch.set_num_threads(<cores>)` and, when the
load average exceeds the cores, `OMP_WAIT_POLICY=PASSIVE` (as `bench_hf_train.py`). `--cache static
--compile`: a static KV cache and `generate`'s own `torch.compile` of the
forward pass (`CompileConfig`, inductor, forced on CPU), compiled by the warm-up
call. One untimed warm-up call, then `--repeats` timed calls: tokens/s =
B × N ÷ the median seconds per call (prompt processing included).

    .venv-bench/bin/python benchmarks/bench_hf_generate.py --batch 8 --dtype float32 --repeats 3
    .venv-bench/bin/python benchmarks/bench_hf_generate.py --batch 1 --cache static --compile
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_hf_train import omp_wait_policy
from bench_tfsft_generate import add_generation_args, check_exact, check_generation_args, read_prompt_file, result
from common import emit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generation_args(parser)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass (needs --cache static)")
    args = parser.parse_args(argv)
    check_generation_args(parser, args)
    if args.compile and args.cache != "static":
        parser.error("--compile needs --cache static (generate compiles only with a static cache)")
    return args


def result_name(args) -> str:
    """`generate_hf[_bf16][_static][_compiled]_b<batch>`: the measurement's name in run.py."""
    parts = ["generate_hf", "bf16" if args.dtype == "bfloat16" else "", "static" if args.cache == "static" else "",
             "compiled" if args.compile else "", f"b{args.batch}"]
    return "_".join(p for p in parts if p)


def main(argv=None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    prompt = read_prompt_file()
    wait_policy = omp_wait_policy("auto")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig

    torch.set_num_threads(os.cpu_count())
    path = Path(prompt["gguf"])
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=getattr(torch, args.dtype)).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt["prompt"]}],
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids != prompt["token_ids"]:
        raise SystemExit(f"the prompt's ids differ from tfsft's:\n{ids}\n{prompt['token_ids']}")
    input_ids = torch.tensor([ids] * args.batch)
    options = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False,
               "attention_mask": torch.ones_like(input_ids), "pad_token_id": tokenizer.eos_token_id}
    if args.cache == "static":
        options["cache_implementation"] = "static"
    if args.compile:
        config = CompileConfig(mode="default")
        config._compile_all_devices = True  # generate compiles only on accelerators otherwise
        options["compile_config"] = config

    def call() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids, **options)
        seconds = time.perf_counter() - start
        check_exact([out.shape[1] - len(ids)] * args.batch, args.new_tokens)
        return seconds

    warmup = call()  # compiles with --compile
    seconds = [call() for _ in range(args.repeats)]
    emit(result(result_name(args), args.batch, args.new_tokens, len(ids), seconds, load_start,
                impl="HF Transformers generate", dtype=args.dtype, cache=args.cache, compiled=args.compile,
                warmup_seconds=warmup, omp_wait_policy=wait_policy, torch=torch.__version__, transformers=transformers.__version__))


if __name__ == "__main__":
    main()
