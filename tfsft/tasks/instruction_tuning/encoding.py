"""Conversations → token ids and loss weights; served prompts → token ids.

Each rendered segment (templates.py) is tokenized on its own, in graph (a
`tf.function` over KerasHub's TF Text BPE, the path the SavedModel runs too;
KerasHub's eager Python path splits runs of spaces differently), and the ids
are concatenated. That equals tokenizing the whole string whenever segment boundaries are also
word boundaries of the BPE's pre-tokenizer, which holds at the templates'
literals (they start at a special token or a newline) unless user text ends in
whitespace before one, e.g. an input ending in "\\n" before alpaca's "\\n\\n###"
(measured on the shared data with SmolLM2's tokenizer: 100 % equal, 99.1 % for
GPTeacher under alpaca). Training and serving both tokenize by segment, so
they always agree.

An example of n tokens gives model inputs `ids[:-1]`, targets `ids[1:]` and
weights `w[1:]` (T = n - 1 positions), where `w` = 1 on response tokens and the
token that ends each response (`<|im_end|>` or eos: the model learns to stop)
and 0 on the prompt and template text; `train_on_prompt` makes every weight 1.

Truncation: an example longer than `sequence_length + 1` tokens (T > L) is
cut to L + 1 tokens. The text before the last response is cut from the left
(earlier turns go first; what stays ends with the generation prefix, e.g.
`<|im_start|>assistant\\n`) but keeps at least half the window when it is that
long; only then is the last response cut from the right (losing its end
token). Every cut example is counted (`EncodedSplit.truncated`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import no_convert_scope

from tfsft.data.pipeline import EncodedSplit
from tfsft.data.readers import DataError
from tfsft.tasks.instruction_tuning.records import Conversation
from tfsft.tasks.instruction_tuning.templates import Template, TemplateError

TOKENIZE_BATCH = 1024


class Tokens(NamedTuple):
    """Token ids of examples and whether each token is a response token, plus the cut count."""

    ids: list[np.ndarray]  # (n_i,) int32 each
    response: list[np.ndarray]  # (n_i,) bool each
    truncated: int


def fit_to_window(ids: np.ndarray, response: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts one example to at most `budget` tokens (see the module doc).

    With p tokens before the last response and r in it (with its end token):
    keep the last `min(p, max(budget - r, budget // 2))` of the p, then the first
    `budget - kept` of the r.
    """
    if len(ids) <= budget:
        return ids, response
    last = int(np.argmin(response[::-1]))  # tokens in the trailing response run (the prompt is never empty)
    start = len(ids) - last
    prompt = min(start, max(budget - last, budget // 2))
    keep = slice(start - prompt, start - prompt + budget)
    return ids[keep], response[keep]


class InstructionEncoder(tf.Module):
    """Conversations → (ids, response flags); served prompts → ids; generated ids → text.

    Args:
        tokenizer: a KerasHub byte-level BPE tokenizer that keeps the
            template's special tokens whole.
        sequence_length: L, the most positions (model inputs) per example.
        template: a `templates.Template`.
        system: the system prompt used when a conversation has none (None = no system block).

    Attributes:
        pad_id: the id that pads batches.
        stop_ids: ids that end a generated response (the template's end token and eos).
    """

    def __init__(self, tokenizer, sequence_length: int, template: Template, system: Optional[str] = None):
        super().__init__()
        self.tokenizer = tokenizer
        # Always the TF Text path (KerasHub runs pure Python in eager mode), as in graphs.
        self.tokenizer._allow_python_workflow = False
        self.sequence_length = sequence_length
        self.template = template
        self.system = system
        # One traced graph for every batch: tracing KerasHub's BPE takes seconds, running it milliseconds.
        self._tokenize = tf.function(lambda texts: tf.cast(tokenizer(texts), tf.int32),
                                     input_signature=[tf.TensorSpec([None], tf.string)])
        for token, pieces in zip(template.special_tokens, self.tokenize(list(template.special_tokens))):
            if len(pieces) != 1:
                raise ValueError(
                    f"task.template {template.name} needs {token!r} as one token, but the tokenizer makes "
                    f"{len(pieces)} pieces of it; use a model whose tokenizer has it, or template alpaca/plain")
        end_id = self.token_id(template.end)
        eos = getattr(tokenizer, "end_token_id", None)
        self.stop_ids = tuple(sorted({end_id} | ({int(eos)} if eos is not None else set())))
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else end_id
        before, after = template.prompt_parts(system)
        self._before = tf.constant(self._segment_ids(before), tf.int32)
        self._after = tf.constant(self._segment_ids(after), tf.int32)

    # --- training data ------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text, tokenized in graph in batches of `TOKENIZE_BATCH`."""
        out = []
        for start in range(0, len(texts), TOKENIZE_BATCH):
            batch = self._tokenize(tf.constant(texts[start:start + TOKENIZE_BATCH], tf.string))
            out += np.split(batch.flat_values.numpy(), np.cumsum(batch.row_lengths().numpy())[:-1])
        return out

    def token_id(self, token: str) -> int:
        (token_id,) = self.tokenize([token])[0]
        return int(token_id)

    def _segment_ids(self, segments) -> np.ndarray:
        ids = self.tokenize([s.text for s in segments]) if segments else []
        return np.concatenate(ids).astype(np.int32) if ids else np.zeros([0], np.int32)

    def encode(self, conversations: list[Conversation], where: Callable[[int], str]) -> Tokens:
        """Renders, tokenizes (each distinct segment once) and fits every conversation to L + 1 tokens.

        Args:
            conversations: the examples.
            where: example index → "file:line", for errors.
        """
        rendered = []
        for index, conversation in enumerate(conversations):
            try:
                rendered.append(self.template.render(conversation, self.system))
            except TemplateError as e:
                raise DataError(f"{where(index)}: {e}") from None
        texts = list(dict.fromkeys(s.text for segments in rendered for s in segments))
        table = dict(zip(texts, self.tokenize(texts)))
        ids, response, truncated = [], [], 0
        for segments in rendered:
            pieces = [table[s.text] for s in segments]
            flags = np.concatenate([np.full(len(p), s.trainable) for p, s in zip(pieces, segments)])
            full = np.concatenate(pieces).astype(np.int32)
            example, flags = fit_to_window(full, flags, self.sequence_length + 1)
            truncated += len(example) < len(full)
            ids.append(example)
            response.append(flags)
        return Tokens(ids, response, truncated)

    # --- serving ------------------------------------------------------------
    def prompt_ids(self, prompts) -> tf.RaggedTensor:
        """(B,) user messages → (B, None) int32 ids of the rendered prompts, as in training."""
        prompts = tf.convert_to_tensor(prompts, tf.string)
        with no_convert_scope():  # keep KerasHub from turning eager outputs into Python lists
            ids = tf.cast(self.tokenizer(prompts), tf.int32)
        rows = tf.shape(prompts)[0:1]
        before = tf.RaggedTensor.from_tensor(tf.tile(self._before[None], tf.concat([rows, [1]], 0)))
        after = tf.RaggedTensor.from_tensor(tf.tile(self._after[None], tf.concat([rows, [1]], 0)))
        return tf.concat([before, ids, after], axis=1)

    def responses(self, token_ids, lengths) -> tf.Tensor:
        """(B, N) generated ids with (B,) valid lengths → (B,) response strings without stop tokens."""
        token_ids = tf.convert_to_tensor(token_ids, tf.int32)
        valid = tf.sequence_mask(lengths, tf.shape(token_ids)[1])
        stop = tf.reduce_any(tf.equal(token_ids[..., None], tf.constant(self.stop_ids, tf.int32)), axis=-1)
        kept = tf.ragged.boolean_mask(token_ids, tf.logical_and(valid, tf.logical_not(stop)))
        with no_convert_scope():
            return self.tokenizer.detokenize(kept)


def example_dataset(tokens: Tokens, weights: list[np.ndarray]) -> tf.data.Dataset:
    """`({token_ids, padding_mask} (T,), targets (T,), weights (T,))` per example, T = n - 1."""
    lengths = [len(ids) - 1 for ids in tokens.ids]
    inputs = np.concatenate([ids[:-1] for ids in tokens.ids])
    targets = np.concatenate([ids[1:] for ids in tokens.ids])
    weight = np.concatenate([w[1:] for w in weights]).astype(np.float32)
    ragged = [tf.RaggedTensor.from_row_lengths(v, lengths) for v in (inputs, targets, weight)]

    @tf.autograph.experimental.do_not_convert
    def features(token_ids, target, w):
        return {"token_ids": token_ids, "padding_mask": tf.ones_like(token_ids)}, target, w

    return tf.data.Dataset.from_tensor_slices(tuple(ragged)).map(features)


def encoded_split(tokens: Tokens, weights: list[np.ndarray]) -> EncodedSplit:
    """The cached per-example dataset with its size, truncation count and mean length."""
    mean = float(np.mean([len(ids) - 1 for ids in tokens.ids]))
    return EncodedSplit(example_dataset(tokens, weights).cache(), len(tokens.ids), tokens.truncated, mean)
