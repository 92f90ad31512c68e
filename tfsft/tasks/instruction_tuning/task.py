"""The instruction-tuning task: prompt → response pairs fine-tune a causal LM.

Data: `records.py` (prompt/completion, Alpaca, chat messages, templated
tables) → `templates.py` (chatml, alpaca, plain) → `encoding.py` (ids,
response-only loss weights, truncation counted).
Model: KerasHub `LlamaCausalLM` or `GPT2CausalLM` (by backbone type) with
`preprocessor=None`: `{token_ids, padding_mask}` (B, T) → logits (B, T, V).
Loss: next-token cross-entropy from the logits, weighted by `sample_weight`
and averaged over the weighted tokens of a batch, Σ w·CE / Σ w. The logits
are float32 under `mixed_bfloat16` too: the output projection multiplies the
bfloat16 hidden states by the float32 token table (Keras' `Embedding` does not
autocast it), which promotes the matmul to float32. KerasHub's
`CausalLM.compile` adds the weighted `sparse_categorical_accuracy`, i.e.
response-token accuracy.
Evaluation: response-token cross-entropy, perplexity = exp(Σ w·CE / Σ w) and
accuracy, then greedy generation scored with the configured metrics
(`evaluation.py`), written to `generations.jsonl`.
Serving: `serving.GenerationServingModule` (prompt strings → completions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import keras
import keras_hub
import numpy as np

from tfsft.data.pipeline import EncodedSplit, evaluation_dataset
from tfsft.models.backbones import load_backbone
from tfsft.tasks.instruction_tuning.encoding import InstructionEncoder, encoded_split
from tfsft.tasks.instruction_tuning.evaluation import evaluate_generation
from tfsft.tasks.instruction_tuning.options import InstructionTuningOptions
from tfsft.tasks.instruction_tuning.packing import PackedCausalLM, packed_split
from tfsft.tasks.instruction_tuning.records import InstructionExamples, read_instruction_split
from tfsft.tasks.instruction_tuning.serving import GenerationServingModule
from tfsft.tasks.instruction_tuning.templates import IM_END, IM_START, make_template, template_of_chat_template
from tfsft.tasks.pretraining import token_statistics


class InstructionTuningTask:
    """Fine-tunes, evaluates and serves an instruction-following causal LM."""

    options_class = InstructionTuningOptions
    problem = "generation"
    default_monitor = "val_loss"

    def __init__(self, options: InstructionTuningOptions, data_config):
        self.options = options
        self.data = data_config
        self.model_info: dict = {}  # the model's chat template facts (`tfsft.models.gguf.chat_template_info`)
        self.resolved: Optional[dict] = None  # template, system_prompt, eos, template_source (the task state)
        self.sample_prompts: list[str] = []

    # --- data -------------------------------------------------------------
    def read(self, split: str) -> InstructionExamples:
        return read_instruction_split(self.data, split, self.options)

    def fit_labels(self, train: InstructionExamples) -> None:
        """Keeps a few training prompts for the export check (there are no labels)."""
        self.sample_prompts = [c.turns[0].prompt for c in train.conversations[:3]]

    def build_backbone(self, model_config, train_examples, run_dir: Path):
        """`load_backbone`, plus the chat template of a GGUF model (for `template: auto`)."""
        backbone, tokenizer = load_backbone(model_config)
        if model_config.backbone.startswith("gguf:"):
            from tfsft.models.gguf import chat_template_info

            self.model_info = chat_template_info(model_config.backbone)
        return backbone, tokenizer

    def resolve(self, tokenizer) -> dict:
        """The template, system prompt and end token this model trains with (see the options)."""
        info, options = self.model_info, self.options
        eos = info.get("eos") or getattr(tokenizer, "end_token", None)
        if eos is None:
            raise ValueError("task instruction_tuning: the tokenizer declares no end-of-sequence token")
        name, source = options.template, "task.template"
        if name == "auto":
            chat_template = info.get("template")
            name = template_of_chat_template(chat_template) if chat_template else None
            source = "the model's chat template"
            vocabulary = tokenizer.get_vocabulary()
            if name is None and IM_START in vocabulary and IM_END in vocabulary:
                name, source = "chatml", "the tokenizer's ChatML tokens"
            if name is None:
                raise ValueError("task.template: auto finds no chat template for this model (no GGUF chat "
                                 "template, no <|im_start|>/<|im_end|> tokens); set chatml, alpaca or plain")
        system = options.system_prompt
        if system is None:
            system = info.get("default_system") if name == "chatml" else None
        return {"template": name, "system_prompt": system or None, "eos": eos, "template_source": source}

    def make_encoder(self, tokenizer, sequence_length: int) -> InstructionEncoder:
        if self.resolved is None:
            self.resolved = self.resolve(tokenizer)
        template = make_template(self.resolved["template"], self.resolved["eos"])
        return InstructionEncoder(tokenizer, sequence_length, template, self.resolved["system_prompt"])

    def encode(self, examples: InstructionExamples, encoder: InstructionEncoder, training: bool) -> EncodedSplit:
        """Training: weights per `train_on_prompt`, packed rows with `packing`; validation: response tokens only."""
        tokens = encoder.encode(examples.conversations, examples.where)
        if training and self.options.train_on_prompt:
            weights = [np.ones(len(ids), np.float32) for ids in tokens.ids]
        else:
            weights = [flags.astype(np.float32) for flags in tokens.response]
        if training and self.options.packing:
            return packed_split(tokens.ids, weights, encoder.sequence_length, tokens.truncated)
        return encoded_split(tokens, weights)

    def state(self) -> dict:
        return {**(self.resolved or {}), "sample_prompts": self.sample_prompts}

    def load_state(self, state: dict) -> None:
        self.sample_prompts = state["sample_prompts"]
        self.resolved = {k: state[k] for k in ("template", "system_prompt", "eos", "template_source")}

    # --- model ------------------------------------------------------------
    def build_model(self, backbone) -> keras.Model:
        """The KerasHub CausalLM of the backbone (wrapped in `PackedCausalLM` with `packing`)."""
        if isinstance(backbone, keras_hub.models.LlamaBackbone):
            causal_lm = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
        elif isinstance(backbone, keras_hub.models.GPT2Backbone):
            causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
        else:
            raise ValueError(  # noqa: TRY004 (a config mismatch; the CLI reports ValueErrors)
                f"task instruction_tuning needs a Llama or GPT-2 backbone. Received: {type(backbone).__name__}")
        return PackedCausalLM(causal_lm) if self.options.packing else causal_lm

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    def metrics(self):
        return []  # KerasHub's CausalLM.compile adds the weighted (response-token) accuracy

    # --- evaluation ---------------------------------------------------------
    def evaluate(self, model, examples: InstructionExamples, split: EncodedSplit, encoder: InstructionEncoder,
                 batch_size: int, out_dir: Path, verbose: int = 0) -> dict:
        """Response-token loss and perplexity, then generation metrics on the first examples."""
        stats = token_statistics(model, evaluation_dataset(split, pad_id=encoder.pad_id, batch_size=batch_size))
        metrics = {"examples": len(examples), "truncated": split.truncated, "cross_entropy": stats["cross_entropy"],
                   "perplexity": stats["perplexity"], "response_token_accuracy": stats["accuracy"],
                   "response_tokens": stats["tokens"]}
        if not self.options.metrics:
            return metrics
        count = self.options.eval_generate_examples or len(examples)
        conversations = examples.conversations[:count]
        tokens = encoder.encode(conversations, examples.where)
        return {**metrics, **evaluate_generation(
            model, encoder, conversations, tokens, metrics=self.options.metrics,
            max_new_tokens=self.options.max_new_tokens, batch_size=self.options.generate_batch_size,
            out_dir=Path(out_dir))}

    # --- serving ------------------------------------------------------------
    def serving_module(self, model, encoder: InstructionEncoder) -> GenerationServingModule:
        return GenerationServingModule(model, encoder, self.options.max_new_tokens)

    def sample_inputs(self) -> dict[str, list[str]]:
        """Training prompts for the export check, plus one longer than any model."""
        return {"prompt": self.sample_prompts + ["word " * 600]}
