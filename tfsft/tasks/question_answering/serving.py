"""The QA SavedModel: questions and contexts in, answers with character offsets out.

`serving_default(question: string (B,), context: string (B,))` → the outputs
of `postprocess.answer_outputs`: `answer`, `answer_start`, `answer_end`,
`score`, `null_score`, and the n-best list `candidate_count`,
`candidate_texts`, `candidate_starts`, `candidate_ends`, `candidate_scores`.
A context longer than one window is cut into windows inside the graph and the
best span over all of them is returned.
"""

from __future__ import annotations

import tensorflow as tf

from tfsft.tasks.question_answering.postprocess import answer_outputs, best_spans


def answer_questions(model, encoder, question, context, input_names: list[str], options) -> dict:
    """Windows → model → best spans → answers, for B questions (B,) with their contexts (B,)."""
    encoded = encoder(question, context)
    logits = model({k: encoded[k] for k in input_names}, training=False)  # (NW, L, 2)
    spans = best_spans(logits, encoded, tf.size(question), options.n_best, options.max_answer_length)
    return answer_outputs(context, spans, options.null_answers, options.null_threshold)


class QuestionAnsweringServingModule(tf.Module):
    """Strings → answers, for `tf.saved_model.save`.

    Args:
        model: the trained span model ((NW, L) inputs → (NW, L, 2) logits).
        encoder: the `QuestionContextEncoder` used in training.
        options: the task's `QuestionAnsweringOptions` (n_best, max_answer_length, null answers).
    """

    def __init__(self, model, encoder, options):
        super().__init__(name="tfsft_qa_serving")
        self.model = model
        self.encoder = encoder
        self._options = options
        self._input_names = list(model.input)
        spec = [tf.TensorSpec([None], tf.string, name="question"), tf.TensorSpec([None], tf.string, name="context")]
        self.serve = tf.function(self._serve, input_signature=spec)

    def _serve(self, question, context):
        return answer_questions(self.model, self.encoder, question, context, self._input_names, self._options)
