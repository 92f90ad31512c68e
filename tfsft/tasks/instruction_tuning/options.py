"""Options of `task: {name: instruction_tuning}`, validated when the config is loaded."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Literal, Optional

Metric = Literal["exact_match", "bleu", "chrf", "rouge_l"]
LABEL_NAME = "label_name"  # the placeholder a `label_names` map fills in a format template


def template_fields(template: str) -> list[str]:
    """The named fields of a `str.format` template ("{sentence}" → ["sentence"]).

    Raises:
        ValueError: unbalanced braces, or a positional field ("{}", "{0}").
    """
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    for name in fields:
        if name == "" or name.isdigit():
            raise ValueError(f"positional field {{{name}}}; name a column instead, e.g. {{sentence}}")
    return fields


@dataclass
class InstructionTuningOptions:
    """Options of `task: {name: instruction_tuning}`.

    Attributes:
        template: how a conversation becomes text: "auto" (the model's own
            chat template: from the GGUF file, else ChatML when the tokenizer
            has `<|im_start|>`/`<|im_end|>`), "chatml", "alpaca" or "plain"
            (see `templates.py`).
        system_prompt: null = the model's default system prompt (ChatML models
            that declare one, e.g. SmolLM2), else none; "" = never a system
            prompt; any other text = that system prompt. A `system` message in
            chat data overrides it for its conversation.
        train_on_prompt: false = loss on response tokens (and their end token)
            only; true = on every token. Validation always scores responses only.
        prompt_column, completion_column: keys of prompt/completion records.
        instruction_column, input_column, output_column: keys of Alpaca-style
            records; `output_column: null` takes "output" or "response",
            whichever a record has.
        messages_column: key of chat records (a list of {role, content}).
        prompt_template, completion_template: `str.format` templates over a
            row's columns (TSV/CSV/JSON) that make a prompt/completion pair,
            e.g. "Review: {sentence}" and "{label_name}"; both or neither.
        label_names: fills `{label_name}` from the row's `data.label_column`
            (e.g. {"0": negative, "1": positive}).
        packing: several short training examples per row, each attending only
            to itself (`packing.py`; Llama and GPT-2 backbones). It lives here,
            not under `data:`, because it changes the model's inputs.
        max_new_tokens: most tokens generated per evaluation prompt.
        metrics: generation metrics computed on the held-out split: any of
            exact_match, bleu, chrf, rouge_l ([] = loss and perplexity only).
        eval_generate_examples: how many held-out examples are generated for
            those metrics (null = all).
        generate_batch_size: prompts generated together (sorted by length).
    """

    name: str = "instruction_tuning"
    template: Literal["auto", "chatml", "alpaca", "plain"] = "auto"
    system_prompt: Optional[str] = None
    train_on_prompt: bool = False
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    instruction_column: str = "instruction"
    input_column: str = "input"
    output_column: Optional[str] = None
    messages_column: str = "messages"
    prompt_template: Optional[str] = None
    completion_template: Optional[str] = None
    label_names: Optional[dict[str, str]] = None
    packing: bool = False
    max_new_tokens: int = 128
    metrics: list[Metric] = field(default_factory=lambda: ["rouge_l"])
    eval_generate_examples: Optional[int] = 200
    generate_batch_size: int = 16

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        if (self.prompt_template is None) != (self.completion_template is None):
            missing = "completion_template" if self.completion_template is None else "prompt_template"
            errors.append((missing, "give prompt_template and completion_template together, or neither"))
        used = []
        for key in ("prompt_template", "completion_template"):
            text = getattr(self, key)
            if text is None:
                continue
            try:
                used += template_fields(text)
            except ValueError as e:
                errors.append((key, f"not a valid format template ({e}). Received: {text!r}"))
        if LABEL_NAME in used and not self.label_names:
            errors.append(("label_names", "required: a template uses {label_name}"))
        if self.label_names and LABEL_NAME not in used:
            errors.append(("label_names", "unused: no prompt_template/completion_template has {label_name}"))
        for key in ("max_new_tokens", "generate_batch_size"):
            if getattr(self, key) <= 0:
                errors.append((key, f"must be > 0. Received: {getattr(self, key)}"))
        if self.eval_generate_examples is not None and self.eval_generate_examples <= 0:
            errors.append(("eval_generate_examples", f"must be > 0 or null. Received: {self.eval_generate_examples}"))
        if len(set(self.metrics)) != len(self.metrics):
            errors.append(("metrics", f"must not repeat a metric. Received: {self.metrics}"))
        return errors
