"""Translation (sequence to sequence): one file per role.

- `task.py`: options, the task (pairs → SentencePiece → encoder–decoder →
  label-smoothed loss → BLEU/chrF → string-in/string-out SavedModel);
- `search.py`: greedy and beam search as `tf.while_loop`s (in the SavedModel too).
"""

from tfsft.tasks.translation.task import TranslationOptions, TranslationTask

__all__ = ["TranslationOptions", "TranslationTask"]
