"""Text generation: instruction-tuned runs, and pretrained GPT-2 presets with KerasHub samplers.

An `instruction_tuning` run directory generates through its serving module
(`load_generator`, `generate_text`: the trained template, the KV-cache loop of
`tfsft.tasks.instruction_tuning.sampling`, the same graph as its SavedModel).
The rest of this module continues prompts with a `tfsft pretrain` GPT-2:
KerasHub's `GPT2CausalLM` (backbone + tokenizer from a preset folder, usually
`<run_dir>/preset` written by `tfsft pretrain`), compiled with one of:

* `greedy`: argmax at each step (deterministic);
* `top_k`: sample from the k most likely tokens;
* `top_p`: sample from the smallest set whose probability mass reaches p
  (nucleus sampling).

`max_length` counts all tokens, the start token and the prompt included, and
must not exceed the backbone's `max_sequence_length`. Generation stops early
at `<|endoftext|>` unless `stop_at_end=False`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import keras_hub

Sampler = Literal["greedy", "top_k", "top_p"]
INSTRUCTION_TASK = "instruction_tuning"


def is_instruction_run(path: str | Path) -> bool:
    """Whether `path` is a run directory whose task is instruction_tuning."""
    from tfsft.experiment import load_config

    config = Path(path) / "config.yaml"
    return config.exists() and load_config(config).task.name == INSTRUCTION_TASK


def load_generator(source):
    """A `Generator` for an instruction_tuning run directory or `LoadedRun` (its module as `tfsft export` builds it)."""
    from tfsft.run_dir import LoadedRun, load_run
    from tfsft.tasks.instruction_tuning.text_generation import Generator

    loaded = source if isinstance(source, LoadedRun) else load_run(source)
    if loaded.config.task.name != INSTRUCTION_TASK:
        raise ValueError(f"{loaded.path}: a {loaded.config.task.name!r} run; this needs an {INSTRUCTION_TASK} run")
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    return Generator(loaded.task.serving_module(loaded.model, encoder))


def generate_text(source, prompts: list[str], **options) -> list[dict]:
    """Completions of an instruction-tuned run, one row per prompt (options: `Generator.complete_ids`).

    Example:
        >>> generate_text("runs/smollm2_alpaca", ["Name three colours."], max_new_tokens=32, stop=["\\n\\n"])
        [{'prompt': 'Name three colours.', 'completion': ..., 'num_tokens': ..., 'finish_reason': 'stop', ...}]
    """
    return load_generator(source).generate(prompts, **options)


def preset_folder(path: str | Path) -> Path:
    """A preset folder from a run directory (`<run>/preset`) or a preset folder itself."""
    path = Path(path).expanduser()
    for folder in (path / "preset", path):
        if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
            return folder
    raise FileNotFoundError(f"{path}: no KerasHub preset (config.json + tokenizer.json) here or in {path / 'preset'}; "
                            "give a `tfsft pretrain` run directory or its preset/ folder")


def make_sampler(sampler: Sampler = "greedy", k: int = 10, p: float = 0.9, seed: int | None = None):
    """The KerasHub sampler named `sampler` (k for top_k, p for top_p)."""
    if sampler == "greedy":
        return keras_hub.samplers.GreedySampler()
    if sampler == "top_k":
        if k < 1:
            raise ValueError(f"--k must be >= 1. Received: k={k}")
        return keras_hub.samplers.TopKSampler(k=k, seed=seed)
    if sampler == "top_p":
        if not 0.0 < p <= 1.0:
            raise ValueError(f"--p must be in (0, 1]. Received: p={p}")
        return keras_hub.samplers.TopPSampler(p=p, seed=seed)
    raise ValueError(f"sampler must be greedy, top_k or top_p. Received: sampler={sampler!r}")


def load_causal_lm(path: str | Path, max_length: int):
    """A `GPT2CausalLM` with a preprocessor of `sequence_length = max_length`."""
    folder = str(preset_folder(path))
    backbone = keras_hub.models.Backbone.from_preset(folder)
    if not isinstance(backbone, keras_hub.models.GPT2Backbone):
        raise ValueError(  # noqa: TRY004 (a wrong preset; the CLI reports ValueErrors)
            f"{folder}: generation needs a GPT-2 (causal LM) preset. Received: {type(backbone).__name__}")
    if not 1 < max_length <= backbone.max_sequence_length:
        raise ValueError(f"--max-length must be in [2, {backbone.max_sequence_length}] (the model's "
                         f"max_sequence_length). Received: max_length={max_length}")
    tokenizer = keras_hub.models.Tokenizer.from_preset(folder)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=max_length)
    return keras_hub.models.GPT2CausalLM(backbone, preprocessor=preprocessor)


def generate(path: str | Path, prompts: list[str], *, sampler: Sampler = "greedy", max_length: int = 64,
             k: int = 10, p: float = 0.9, seed: int | None = None, stop_at_end: bool = True) -> list[str]:
    """Continues each prompt; returns prompt + continuation per prompt.

    Example:
        >>> generate("runs/pretrain_gpt2_small", ["ROMEO:"], sampler="top_k", k=5, seed=1)
    """
    model = load_causal_lm(path, max_length)
    model.compile(sampler=make_sampler(sampler, k, p, seed))
    outputs = model.generate(list(prompts), max_length=max_length, stop_token_ids="auto" if stop_at_end else None)
    return [str(o) for o in outputs]
