"""Held-out evaluation by generation: greedy responses → exact match, BLEU, chrF, ROUGE-L.

Each example's prompt is its training token ids up to its last response (so
system prompt, template and truncation match training); `sampling.generate_tokens`
continues it greedily for up to `max_new_tokens` tokens, stopping at the
template's end token. Prompts are generated in batches of similar length
(sorted), since a batch costs extra steps for every token its prompts differ by.

Metrics against the reference response (the last assistant turn):

* `exact_match`: fraction equal after `strip()` and lower-casing;
* `bleu`, `chrf`: sacreBLEU corpus scores (0–100);
* `rouge_l`: mean ROUGE-L F1 (`rouge-score`, its default tokenizer: lower-cased
  alphanumeric words), 0–1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfsft.tasks.instruction_tuning.encoding import InstructionEncoder, Tokens
from tfsft.tasks.instruction_tuning.records import Conversation
from tfsft.tasks.instruction_tuning.sampling import generate_tokens


def prompt_tokens(tokens: Tokens) -> list[np.ndarray]:
    """Each example's ids before its last response (the response run that ends it)."""
    out = []
    for ids, response in zip(tokens.ids, tokens.response):
        last = int(np.argmin(response[::-1]))  # tokens in the trailing response run
        out.append(ids[:len(ids) - last])
    return out


def generate(model, encoder: InstructionEncoder, prompts: list[np.ndarray], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy responses (end token stripped) to token-id prompts, in input order."""
    backbone_limit = getattr(model.backbone, "max_sequence_length", None)  # GPT-2's learned positions

    # Plain TF ops: no AutoGraph, which re-reads source files when it traces.
    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)], autograph=False)
    def run(ids):
        out = generate_tokens(model, ids, max_new_tokens, end_token_ids=encoder.stop_ids, pad_id=encoder.pad_id,
                              max_length=backbone_limit)
        return encoder.responses(out.token_ids, out.lengths)

    order = np.argsort([len(p) for p in prompts], kind="stable")
    outputs = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids = tf.ragged.constant([prompts[i] for i in chunk], dtype=tf.int32, ragged_rank=1)
        for i, text in zip(chunk, run(ids).numpy()):
            outputs[i] = text.decode("utf-8", errors="replace")
    return outputs


def score(outputs: list[str], references: list[str], metrics: list[str]) -> dict:
    """The named metrics of `outputs` against `references` (see the module doc)."""
    result = {}
    if "exact_match" in metrics:
        same = [o.strip().lower() == r.strip().lower() for o, r in zip(outputs, references)]
        result["exact_match"] = float(np.mean(same))
    if "bleu" in metrics or "chrf" in metrics:
        import sacrebleu

        if "bleu" in metrics:
            result["bleu"] = round(sacrebleu.metrics.BLEU().corpus_score(outputs, [references]).score, 2)
        if "chrf" in metrics:
            result["chrf"] = round(sacrebleu.metrics.CHRF().corpus_score(outputs, [references]).score, 2)
    if "rouge_l" in metrics:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"])
        result["rouge_l"] = float(np.mean([scorer.score(r, o)["rougeL"].fmeasure for o, r in zip(outputs, references)]))
    return result


def evaluate_generation(model, encoder: InstructionEncoder, conversations: list[Conversation], tokens: Tokens,
                        *, metrics: list[str], max_new_tokens: int, batch_size: int, out_dir: Path) -> dict:
    """Generates for every given example, scores it and writes `out_dir/generations.jsonl`.

    Returns the metrics plus `generated_examples` and `generate_seconds`.
    """
    started = time.time()
    outputs = generate(model, encoder, prompt_tokens(tokens), max_new_tokens, batch_size)
    seconds = time.time() - started
    references = [c.turns[-1].response for c in conversations]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "generations.jsonl", "w", encoding="utf-8") as f:
        for conversation, reference, output in zip(conversations, references, outputs):
            row = {"prompt": conversation.turns[-1].message, "reference": reference, "output": output}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {**score(outputs, references, metrics), "generated_examples": len(outputs),
            "generate_seconds": round(seconds, 1)}
