"""Translation decoding speed: beam search with the decoder's KV cache against re-decoding the prefix.

    .venv/bin/python benchmarks/bench_translation_decoding.py --run-dir runs/multi30k_transformer [--rows 1000]

A finished translation run of the from-scratch Transformer is loaded as
`tfsft evaluate` loads it (`load_run`, the config's precision, inside
`fast_projections`), and the first `--rows` rows of its test split are
translated in batches of `train.eval_batch_size` through the task's own
serving function (`TranslationServingModule.serve`: tokenization, the
configured beam size and length penalty, `max_decode_length`,
detokenization), as `TranslationTask.translate` does, in one process:

* cached: the library's `decoding_inputs` (`decoder_cache` + one
  `decode_step` per position);
* re-decoding: the step the library had before the cache (`redecoding_inputs`
  below): step t runs `backbone.decode` on the whole prefix 0 … t.

Each serving function is traced by one untimed 2-sentence call first (reported
as `trace_s`); the timed pass covers every row once. CPU seconds are the
process's (all threads), steadier than wall time when other jobs share the
cores. The translations must be identical: in float32 a difference is an error
(exit 1, after the results are printed); under a mixed precision the count of
differing rows is reported (one-position and whole-prefix matmuls round
differently, which can flip near-ties). Prints a Markdown table and one
`BENCH_RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from unittest import mock

from common import data_dir, emit


def redecoding_inputs(model, token_ids, padding_mask, max_length):
    """The re-decoding step (the library's before the cache): `(state, step_fn)` for `search.py`."""
    backbone = model.backbone
    state = {"memory": backbone.encode(token_ids, padding_mask), "mask": padding_mask}

    def step(tokens, t, state):
        hidden = backbone.decode(tokens[:, :t + 1], state["memory"], state["mask"])  # (N, t+1, D)
        return backbone.token_embedding(hidden[:, -1, :], reverse=True), state  # (N, V)

    return state, step


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a finished translation run (from-scratch Transformer)")
    parser.add_argument("--rows", type=int, default=1000, help="first rows of the test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, help="default: the config's train.eval_batch_size")
    parser.add_argument("--precision", help="default: the config's train.precision (e.g. float32)")
    parser.add_argument("--only", choices=["cached", "redecoding"], help="time one decoding only (no comparison)")
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error(f"--rows must be > 0. Received: {args.rows}")
    return args


def decode_all(serve, sources: list[str], batch_size: int) -> tuple[list[str], float, float, float]:
    """(translations, trace seconds, wall seconds, CPU seconds) of one pass over `sources`."""
    import tensorflow as tf

    start = time.perf_counter()
    serve(tf.constant(sources[:2]))  # traces (the signature takes any batch size)
    trace = time.perf_counter() - start
    out = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(sources), batch_size):
        result = serve(tf.constant(sources[first:first + batch_size]))
        out.extend(s.decode("utf-8") for s in result["translation"].numpy())
    return out, trace, time.perf_counter() - start, time.process_time() - cpu_start


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    import keras
    import tensorflow as tf

    from tfsft.layers import TransformerSeq2SeqBackbone
    from tfsft.models import fast_matmul
    from tfsft.run_dir import load_run
    from tfsft.tasks.translation import task as translation_task

    load_before = os.getloadavg()[0]
    with fast_matmul.fast_projections():  # as tfsft.training.evaluate runs
        loaded = load_run(Path(args.run_dir))
        config = loaded.config
        if config.task.name != "translation" or not isinstance(loaded.model, translation_task.TransformerTranslator):
            sys.exit(f"{args.run_dir}: not a translation run of the from-scratch Transformer "
                     f"(task {config.task.name}, model {type(loaded.model).__name__})")
        precision = args.precision or config.train.precision
        keras.mixed_precision.set_dtype_policy(precision)
        examples = loaded.task.read(args.split)
        sources, references = examples.texts[:args.rows], examples.pairs[:args.rows]
        encoder = loaded.task.make_encoder(loaded.tokenizer, config.model.sequence_length)
        batch_size = args.batch_size or config.train.eval_batch_size
        options = loaded.task.options

        model = loaded.model
        if args.precision:  # rebuild the model under the requested policy, with the trained weights
            rebuilt = translation_task.TransformerTranslator(
                TransformerSeq2SeqBackbone.from_config(
                    {**model.backbone.get_config(), "dtype": precision}))
            rebuilt.set_weights(model.get_weights())
            model = rebuilt

        runs = {}
        for name in ("cached", "redecoding"):
            if args.only and name != args.only:
                continue
            patch = (mock.patch.object(translation_task, "decoding_inputs", redecoding_inputs) if name == "redecoding"
                     else contextlib.nullcontext())
            with patch:  # the serving function looks `decoding_inputs` up when it traces
                serve = loaded.task.serving_module(model, encoder).serve
                translations, trace, seconds, cpu_seconds = decode_all(serve, sources, batch_size)
            runs[name] = {"translations": translations, "trace_s": round(trace, 2), "seconds": round(seconds, 2),
                          "cpu_seconds": round(cpu_seconds, 2),
                          "sentences_per_s": round(len(sources) / seconds, 2)}
            print(f"{name}: {seconds:.1f} s for {len(sources)} sentences", file=sys.stderr, flush=True)

    bleu = {}
    try:
        import sacrebleu

        for name, run in runs.items():
            bleu[name] = round(sacrebleu.metrics.BLEU().corpus_score(run["translations"], [references]).score, 2)
    except ImportError:
        pass
    differing = []
    if len(runs) == 2:
        differing = [i for i, (a, b) in enumerate(zip(runs["cached"]["translations"],
                                                      runs["redecoding"]["translations"])) if a != b]

    print(f"Beam {options.beam_size}, α {options.length_penalty}, max {options.max_decode_length} tokens, "
          f"{len(sources)} {args.split} sentences, batch {batch_size}, {precision}")
    print()
    print("| decoding | trace s | decode s | CPU s | sentences/s | BLEU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, run in runs.items():
        label = "KV cache" if name == "cached" else "re-decoding the prefix"
        print(f"| {label} | {run['trace_s']} | **{run['seconds']}** | {run['cpu_seconds']} | "
              f"{run['sentences_per_s']} | {bleu.get(name, '')} |")
    result = {
        "name": "translation_decoding",
        "run_dir": str(args.run_dir),
        "split": args.split,
        "rows": len(sources),
        "batch_size": batch_size,
        "beam_size": options.beam_size,
        "length_penalty": options.length_penalty,
        "max_decode_length": options.max_decode_length,
        "precision": precision,
        **{f"{name}_{key}": value for name, run in runs.items() for key, value in run.items()
           if key != "translations"},
        **{f"{name}_bleu": value for name, value in bleu.items()},
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if len(runs) == 2:
        result["speedup"] = round(runs["redecoding"]["seconds"] / runs["cached"]["seconds"], 2)
        result["cpu_speedup"] = round(runs["redecoding"]["cpu_seconds"] / runs["cached"]["cpu_seconds"], 2)
        result["differing_translations"] = len(differing)
        print(f"\nSpeed-up {result['speedup']}× (CPU time {result['cpu_speedup']}×); "
              f"{len(sources) - len(differing)}/{len(sources)} translations identical")
    emit(result)
    if differing:
        for i in differing[:3]:
            print(f"row {i}: cached {runs['cached']['translations'][i]!r} | "
                  f"re-decoding {runs['redecoding']['translations'][i]!r}", file=sys.stderr)
        if precision == "float32":
            sys.exit(f"{len(differing)} of {len(sources)} translations differ in float32")


if __name__ == "__main__":
    main()
