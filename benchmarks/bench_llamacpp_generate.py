"""Generation speed of llama.cpp (PyPI `llama-cpp-python`) on the same GGUF file; runs in `.venv-bench`.

The CPU inference reference: `llama_cpp.Llama(model_path=<the .gguf>,
n_threads=<cores>, n_ctx=512)` on the prompt ids of `bench_tfsft_generate.py`
(`prompt.json`; llama.cpp's tokenization of the same ChatML text must give them).
The token loop is written out on the low-level API: one `eval` of the prompt,
then greedy argmax of the last logits with the end tokens (`<|im_end|>`, eos)
masked, and one `eval` per token, N tokens exactly (N − 1 one-token evals).

Batch 1 only: the high-level `Llama` API holds one sequence per context and has
no batched generation (that needs hand-built multi-sequence `llama_batch`es).

Reports tokens/s with prompt processing (N ÷ seconds per call, the figure
comparable to the other scripts) and of generation alone ((N − 1) ÷ seconds
after the prompt's eval); one untimed warm-up call, medians of `--repeats`.
`OMP_WAIT_POLICY=PASSIVE` under load, as for the PyTorch peer (llama.cpp is
built with OpenMP).

    .venv-bench/bin/python benchmarks/bench_llamacpp_generate.py --new-tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench_hf_train import omp_wait_policy
from bench_tfsft_generate import add_generation_args, check_exact, check_generation_args, read_prompt_file, result
from common import emit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generation_args(parser)
    args = parser.parse_args(argv)
    check_generation_args(parser, args)
    if args.batch != 1:
        parser.error(f"--batch must be 1 (llama-cpp-python's Llama has no batched generation). Received: {args.batch}")
    return args


def greedy(llm, ids: list[int], new_tokens: int, banned: list[int]) -> tuple[float, float, list[int]]:
    """(prompt seconds, generation seconds, tokens): `new_tokens` greedy tokens with `banned` ids masked."""
    import llama_cpp
    import numpy as np

    vocab = llm.n_vocab()
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    prompt_done = time.perf_counter()
    tokens = []
    while True:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        logits[banned] = -np.inf  # llama.cpp's own buffer, rewritten by the next eval
        tokens.append(int(np.argmax(logits)))
        if len(tokens) == new_tokens:
            break
        llm.eval([tokens[-1]])
    return prompt_done - start, time.perf_counter() - prompt_done, tokens


def main(argv=None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    prompt = read_prompt_file()
    wait_policy = omp_wait_policy("auto")
    import llama_cpp

    threads = os.cpu_count()
    llm = llama_cpp.Llama(model_path=prompt["gguf"], n_threads=threads, n_threads_batch=threads, n_ctx=512,
                          verbose=False)
    ids = llm.tokenize(prompt["text"].encode("utf-8"), add_bos=False, special=True)
    if ids != prompt["token_ids"]:
        raise SystemExit(f"llama.cpp's prompt ids differ from tfsft's:\n{ids}\n{prompt['token_ids']}")
    banned = sorted({*prompt["stop_ids"], llm.token_eos()})
    greedy(llm, ids, args.new_tokens, banned)  # warm-up
    prompt_s, generation_s = [], []
    for _ in range(args.repeats):
        p, g, tokens = greedy(llm, ids, args.new_tokens, banned)
        check_exact([len(tokens)], args.new_tokens)
        prompt_s.append(p)
        generation_s.append(g)
    generation = statistics.median(generation_s)
    emit(result("generate_llamacpp_b1", 1, args.new_tokens, len(ids), [p + g for p, g in zip(prompt_s, generation_s)],
                load_start, impl="llama.cpp (llama-cpp-python), greedy token loop", dtype="Q4_1 (the file's)",
                prompt_seconds=statistics.median(prompt_s), generation_seconds=generation,
                generation_tokens_per_s=(args.new_tokens - 1) / generation if args.new_tokens > 1 else None,
                omp_wait_policy=wait_policy, llama_cpp_python=llama_cpp.__version__))


if __name__ == "__main__":
    main()
