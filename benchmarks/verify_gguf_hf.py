"""Hugging Face Transformers' side of `verify_gguf.py`; runs in `.venv-bench` (+ gguf, accelerate).

Loads the GGUF file the way a Transformers user does
(`AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`, dequantized to
float32, and `AutoTokenizer.from_pretrained(folder, gguf_file=name)`), then, for the
request JSON `{"gguf", "sequences", "texts", "question", "out_dir"}`:

* writes the float32 logits (T, vocab) of every id sequence to `<out_dir>/logits_<i>.npy`;
* tokenizes every text (`add_special_tokens=False`);
* renders the file's chat template for the question (`apply_chat_template`,
  `add_generation_prompt=True`) and answers it greedily (`do_sample=False`);

and prints one `BENCH_RESULT {json}` line.

    .venv-bench/bin/python benchmarks/verify_gguf_hf.py request.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from common import emit
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    path, out_dir = Path(request["gguf"]), Path(request["out_dir"])
    torch.set_num_threads(os.cpu_count())
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        for i, ids in enumerate(request["sequences"]):
            np.save(out_dir / f"logits_{i}.npy", model(torch.tensor([ids])).logits[0].float().numpy())
        messages = [{"role": "user", "content": request["question"]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=40, do_sample=False,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    emit({
        "token_ids": [tokenizer(text, add_special_tokens=False)["input_ids"] for text in request["texts"]],
        "chat_prompt": prompt,
        "chat_prompt_ids": prompt_ids,
        "greedy_answer": tokenizer.decode(output[0, len(prompt_ids):], skip_special_tokens=True),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    })


if __name__ == "__main__":
    main(sys.argv[1])
