"""Chat templates: a conversation → text segments, each marked trainable or not.

Three templates (`task.template`), shown for one turn with a system prompt;
`⟨…⟩` marks the trainable segments (the response and the token that ends it):

* `chatml`: `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{prompt}<|im_end|>\\n`
  `<|im_start|>assistant\\n⟨{response}⟩⟨<|im_end|>⟩`; further turns follow after "\\n";
  an Alpaca input (`context`) joins the user message: `{prompt}\\n\\n{context}`;
* `alpaca`: `{system}\\n\\n### Instruction:\\n{prompt}\\n\\n### Input:\\n{context}\\n\\n`
  `### Response:\\n⟨{response}⟩⟨eos⟩` (the Input section only when there is context);
* `plain`: `{system}\\n{prompt}\\n⟨{response}⟩⟨eos⟩`, with a context joined as for chatml.

`eos` is the model's end-of-sequence token. ChatML renders multi-turn chats;
alpaca and plain render one turn. The user's message (with a joined context),
Alpaca's Input and each template literal between them are separate segments: the encoder
tokenizes every segment on its own and concatenates the ids, so the loss mask
is exact and a served prompt is tokenized exactly as in training.

Serving (the prompt up to where the response starts, for one user message):

    >>> template = make_template("chatml", eos="<|im_end|>")
    >>> template.render_prompts(tf.constant(["Hi"]), system="Be brief.")   # (B,) tf.string, in graph
    <tf.Tensor: ... [b'<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n']>
    >>> template.end                      # what ends a response: stop there
    '<|im_end|>'

`InstructionEncoder.prompt_ids` (encoding.py) gives the token ids of the same
prompts, and `InstructionEncoder.stop_ids` the ids that end generation.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Optional

import tensorflow as tf

from tfsft.tasks.instruction_tuning.records import Conversation

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
NAMES = ("chatml", "alpaca", "plain")


class TemplateError(ValueError):
    """A conversation the template cannot render (e.g. several turns with alpaca)."""


@dataclass(frozen=True)
class Segment:
    """Text of a rendered conversation; `trainable` = a response token (loss weight 1)."""

    text: str
    trainable: bool = False


@dataclass(frozen=True)
class Template:
    """A chat template as `str.format` strings.

    Attributes:
        name: chatml, alpaca or plain.
        system: the system block, with `{system}`.
        user: a user turn up to where the response starts, with `{prompt}`.
        user_with_context: the same with a `{context}` section (alpaca); None =
            the context joins the user message after a blank line (one segment).
        end: the token that closes every response (trainable: the model learns to stop).
        separator: text between a response's end and the next turn.
        multi_turn: whether conversations of several turns render.
        special_tokens: tokens the tokenizer must keep whole (one id each).
    """

    name: str
    system: str
    user: str
    user_with_context: Optional[str]
    end: str
    separator: str = ""
    multi_turn: bool = False
    special_tokens: tuple[str, ...] = ()

    def render(self, conversation: Conversation, system: Optional[str] = None) -> list[Segment]:
        """Segments of a whole conversation (empty segments left out).

        `system` is used when the conversation has no system message of its own.
        """
        if len(conversation.turns) > 1 and not self.multi_turn:
            raise TemplateError(f"template {self.name} renders one turn; this conversation has "
                                f"{len(conversation.turns)} (use template chatml for multi-turn chats)")
        own = conversation.system if conversation.system is not None else system
        segments = _fill(self.system, system=own) if own else []
        for index, turn in enumerate(conversation.turns):
            if index:
                segments.append(Segment(self.separator))
            if turn.context and self.user_with_context:
                segments += _fill(self.user_with_context, prompt=turn.prompt, context=turn.context)
            else:
                segments += _fill(self.user, prompt=turn.message)
            segments += [Segment(turn.response, trainable=True), Segment(self.end, trainable=True)]
        return [s for s in segments if s.text]

    def prompt_parts(self, system: Optional[str] = None) -> tuple[list[Segment], list[Segment]]:
        """The segments before and after a served user message (one turn, no context)."""
        head, tail = self.user.split("{prompt}")
        before = (_fill(self.system, system=system) if system else []) + [Segment(head)]
        return [s for s in before if s.text], [Segment(tail)] if tail else []

    def render_prompts(self, prompts: tf.Tensor, system: Optional[str] = None) -> tf.Tensor:
        """(B,) user messages → (B,) rendered prompts ending where the response starts (in graph)."""
        before, after = self.prompt_parts(system)
        return tf.strings.join(["".join(s.text for s in before), prompts, "".join(s.text for s in after)])


def _fill(template: str, **values: str) -> list[Segment]:
    """A format string split into its literal pieces and filled-in fields, in order."""
    segments = []
    for literal, name, _, _ in string.Formatter().parse(template):
        segments.append(Segment(literal))
        if name is not None:
            segments.append(Segment(values[name]))
    return segments


def make_template(name: str, eos: str) -> Template:
    """The named template; `eos` (the tokenizer's end token) ends alpaca and plain responses."""
    if name == "chatml":
        return Template(
            name="chatml",
            system=IM_START + "system\n{system}" + IM_END + "\n",
            user=IM_START + "user\n{prompt}" + IM_END + "\n" + IM_START + "assistant\n",
            user_with_context=None,
            end=IM_END,
            separator="\n",
            multi_turn=True,
            special_tokens=(IM_START, IM_END),
        )
    if name == "alpaca":
        return Template(
            name="alpaca",
            system="{system}\n\n",
            user="### Instruction:\n{prompt}\n\n### Response:\n",
            user_with_context="### Instruction:\n{prompt}\n\n### Input:\n{context}\n\n### Response:\n",
            end=eos,
            special_tokens=(eos,),
        )
    if name == "plain":
        return Template(name="plain", system="{system}\n", user="{prompt}\n", user_with_context=None, end=eos,
                        special_tokens=(eos,))
    raise ValueError(f"unknown template {name!r}; expected one of {', '.join(NAMES)}")


def template_of_chat_template(chat_template: str) -> Optional[str]:
    """Which named template a model's Jinja chat template is (chatml, alpaca), or None."""
    if IM_START in chat_template and IM_END in chat_template:
        return "chatml"
    if "### Instruction" in chat_template and "### Response" in chat_template:
        return "alpaca"
    return None
