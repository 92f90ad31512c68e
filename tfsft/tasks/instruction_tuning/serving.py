"""The SavedModel of an instruction-tuned causal LM: prompt strings in, completions out.

One graph does it all, in TF and TF Text ops: the prompt template and the
byte-level BPE tokenizer (`InstructionEncoder.prompt_ids`, tokenized by
segment as in training), `sampling.generate_tokens` (KV cache,
tf.while_loop) and detokenization. Signatures:

* `serving_default(prompt)`: prompt (B,) string, generated with the export's
  defaults (greedy, the task's `max_new_tokens`);
* `generate(prompt, max_new_tokens, temperature, top_k, top_p, seed)`: the
  knobs as scalars: int32, float32 (0 = greedy), int32 (0 = no limit),
  float32 in (0, 1], int64.

Both return `completion` (B,) string (the end token stripped, invalid UTF-8
from a cut multi-byte character replaced by U+FFFD), `num_tokens` (B,) int32
(tokens in the completion), `finish_reason` (B,) string ("stop": an end token
came, "length": `max_new_tokens` ran out) and `prompt_truncated` (B,) bool
(the prompt was cut from the left to fit `max_length`).

TF Serving wants every input of a signature in each request, and its row
format (`instances`) wants one batch dimension for all inputs, so the scalar
knobs of `generate` go in the columnar format (`inputs`):

    curl -d '{"instances": [{"prompt": "Name three colours."}]}' \\
        localhost:8501/v1/models/chat:predict
    curl -d '{"signature_name": "generate", "inputs": {"prompt": ["Name three colours."],
              "max_new_tokens": 64, "temperature": 0.7, "top_k": 50, "top_p": 0.9, "seed": 1}}' \\
        localhost:8501/v1/models/chat:predict
"""

from __future__ import annotations

import tensorflow as tf

from tfsft.tasks.instruction_tuning.sampling import generate_tokens


class GenerationServingModule(tf.Module):
    """Prompt strings → completions, for `tf.saved_model.save` (see the module doc).

    Args:
        model: a KerasHub `CausalLM` with `call_with_cache` (preprocessor None).
        encoder: the task's `InstructionEncoder`: `prompt_ids` (template +
            tokenizer, as in training), `responses` (ids → text), `stop_ids`, `pad_id`.
        max_new_tokens: the `serving_default` budget.
        max_length: most positions (prompt + completion); default the
            backbone's `max_sequence_length` when it has one (GPT-2), else no limit.
    """

    def __init__(self, model, encoder, max_new_tokens: int, max_length: int | None = None):
        super().__init__(name="tfsft_generation")
        self.model = model
        self.encoder = encoder
        self.max_new_tokens = int(max_new_tokens)
        self.max_length = max_length or getattr(model.backbone, "max_sequence_length", None)
        prompt = tf.TensorSpec([None], tf.string, name="prompt")
        # Plain TF ops with explicit tf.cond/tf.while_loop: no AutoGraph (which re-reads source files when tracing).
        self.serve = tf.function(self._serve, input_signature=[prompt], autograph=False)
        self.generate = tf.function(self._generate, autograph=False, input_signature=[
            prompt,
            tf.TensorSpec([], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ])

    def extra_signatures(self) -> dict:
        return {"generate": self.generate}

    def _serve(self, prompt):
        return self.complete(self.encoder.prompt_ids(prompt), self.max_new_tokens)

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        return self.complete(self.encoder.prompt_ids(prompt), max_new_tokens, temperature, top_k, top_p, seed)

    def complete(self, prompt_ids, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=0, end_token_ids=None):
        """(B, None) prompt ids (template applied) → the signature outputs; TF ops only.

        `end_token_ids` (1-D int) replaces the encoder's `stop_ids` when given.
        """
        end_ids = tf.reshape(tf.convert_to_tensor(
            self.encoder.stop_ids if end_token_ids is None else end_token_ids, tf.int32), [-1])
        out = generate_tokens(self.model, prompt_ids, max_new_tokens, end_token_ids=end_ids,
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              pad_id=self.encoder.pad_id, max_length=self.max_length)
        last = tf.gather(out.token_ids, tf.maximum(out.lengths - 1, 0), batch_dims=1)  # (B,)
        ended = tf.logical_and(out.lengths > 0, tf.reduce_any(tf.equal(last[:, None], end_ids[None, :]), axis=1))
        num_tokens = out.lengths - tf.cast(ended, tf.int32)
        text = tf.reshape(self.encoder.responses(out.token_ids, num_tokens), [-1])
        return {
            "completion": tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"),
            "num_tokens": num_tokens,
            "finish_reason": tf.where(ended, "stop", "length"),
            "prompt_truncated": out.truncated,
        }
