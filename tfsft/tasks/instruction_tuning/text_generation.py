"""Generating with an instruction-tuned model from Python, and `tfsft generate`'s chat.

`Generator` runs the exported graph's own code (`GenerationServingModule.complete`
on the template's prompt ids), so its greedy completions equal the SavedModel's.
`tfsft.generation.load_generator` / `generate_text` make one from a run directory.

Stop strings: each one cuts the decoded completion at its first occurrence
(`finish_reason` becomes "stop"); those that are a single token also end
generation inside the loop, the others only cut the text afterwards.
`num_tokens` counts the tokens generated (before any cut).

Example:
    >>> generator = Generator(task.serving_module(model, encoder))
    >>> generator.generate(["Name three colours."], max_new_tokens=32)
    [{'prompt': 'Name three colours.', 'completion': 'Red, green and blue.', 'num_tokens': 7, ...}]
    >>> for row in chat(generator, ["Hi!", "What did I just say?"]):   # multi-turn (chatml)
    ...     print(row["completion"])
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import tensorflow as tf

from tfsft.tasks.instruction_tuning.records import Conversation, Turn
from tfsft.tasks.instruction_tuning.serving import GenerationServingModule


def chat_segments(template, system, turns: Sequence[Turn], message: str) -> list[str]:
    """Texts of the template's segments for a chat so far plus a new user message, up to where the reply starts.

    The conversation is rendered with the next reply empty, without the end
    token that would close it; the encoder tokenizes each segment on its own,
    so these ids equal `encoder.prompt_ids([message])` for a first message.
    """
    conversation = Conversation(turns=(*turns, Turn(prompt=message, response="")))
    return [s.text for s in template.render(conversation, system)[:-1]]  # [-1]: the end of the empty reply


def check_options(max_new_tokens: int, temperature: float, top_k: int, top_p: float, max_length=None) -> None:
    """Raises ValueError for knobs the graph would reject (the graph's own checks fail as TF errors)."""
    problems = [
        (max_new_tokens < 1, f"max_new_tokens must be >= 1. Received: {max_new_tokens}"),
        (max_length is not None and max_new_tokens >= max_length,
         f"max_new_tokens must be < the model's max_length {max_length}. Received: {max_new_tokens}"),
        (temperature < 0, f"temperature must be >= 0 (0 = greedy). Received: {temperature}"),
        (top_k < 0, f"top_k must be >= 0 (0 = no limit). Received: {top_k}"),
        (not 0 < top_p <= 1, f"top_p must be in (0, 1]. Received: {top_p}"),
    ]
    for failed, message in problems:
        if failed:
            raise ValueError(message)


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


class Generator:
    """An instruction-tuned model ready to generate (one traced graph, reused for every call).

    Args:
        module: the task's `GenerationServingModule` (what `tfsft export` saves).
    """

    def __init__(self, module: GenerationServingModule):
        self.module = module
        encoder = module.encoder
        strings = tf.TensorSpec([None], tf.string)
        graph = functools.partial(tf.function, autograph=False)  # as the serving module's functions
        self._tokenize = graph(lambda t: tf.cast(encoder.tokenizer(t), tf.int32), input_signature=[strings])
        self._prompt_ids = graph(encoder.prompt_ids, input_signature=[strings])
        self._complete = graph(self.module.complete, input_signature=[
            tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64), tf.TensorSpec([None], tf.int32),
        ])

    def complete_ids(self, prompt_ids: tf.RaggedTensor, *, max_new_tokens: int | None = None,
                     temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                     stop: Sequence[str] = ()) -> list[dict]:
        """Rows {completion, num_tokens, finish_reason, prompt_truncated} for (B, None) prompt ids."""
        max_new_tokens = self.module.max_new_tokens if max_new_tokens is None else max_new_tokens
        check_options(max_new_tokens, temperature, top_k, top_p, self.module.max_length)
        encoder = self.module.encoder
        single = [p[0] for p in self._tokenize(tf.constant(stop, tf.string)).to_list() if len(p) == 1] if stop else []
        out = self._complete(
            tf.cast(prompt_ids, tf.int32), tf.constant(max_new_tokens, tf.int32),
            tf.constant(temperature, tf.float32), tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32),
            tf.constant(seed, tf.int64), tf.constant(sorted(set(encoder.stop_ids) | set(single)), tf.int32))
        rows = []
        for completion, count, reason, truncated in zip(*(out[k].numpy() for k in (
                "completion", "num_tokens", "finish_reason", "prompt_truncated"))):
            text, cut = _cut_at_stop(completion.decode("utf-8"), stop)
            rows.append({"completion": text, "num_tokens": int(count),
                         "finish_reason": "stop" if cut else reason.decode(), "prompt_truncated": bool(truncated)})
        return rows

    def generate(self, prompts: Sequence[str], **options) -> list[dict]:
        """One completion row per user prompt (the trained template applied); options as `complete_ids`."""
        ids = self._prompt_ids(tf.constant(list(prompts), tf.string))
        return [{"prompt": p, **row} for p, row in zip(prompts, self.complete_ids(ids, **options))]

    def reply(self, turns: Sequence[Turn], message: str, **options) -> dict:
        """The assistant's next reply after `turns` (earlier exchanges) and the user's `message`."""
        encoder = self.module.encoder
        pieces = self._tokenize(tf.constant(chat_segments(encoder.template, encoder.system, turns, message)))
        return self.complete_ids(tf.RaggedTensor.from_tensor(pieces.flat_values[None]), **options)[0]


def chat(generator: Generator, messages: Iterable[str], **options) -> Iterator[dict]:
    """Replies to user messages one by one, each seeing the chat so far (e.g. lines of stdin).

    Templates that render one turn (alpaca, plain) answer every message on its own.
    """
    multi_turn = generator.module.encoder.template.multi_turn
    turns: list[Turn] = []
    for message in messages:
        row = generator.reply(turns, message, **options)
        if multi_turn:
            turns.append(Turn(prompt=message, response=row["completion"]))
        yield row
