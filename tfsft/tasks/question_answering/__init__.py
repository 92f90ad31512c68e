"""Extractive question answering (SQuAD): one file per role.

- `task.py`: options, the task (data → model → loss → evaluation → export);
- `data.py`: SQuAD JSON / JSON lines / TFDS readers and the answer checks;
- `windows.py`: question + context → WordPiece windows with character offsets (the encoder);
- `head.py`: the masked start/end logits, their loss and span accuracy;
- `postprocess.py`: n-best spans over all windows, null answers (in-graph);
- `metrics.py`: the official SQuAD exact match and F1;
- `serving.py`: the SavedModel module (question and context strings in).
"""

from tfsft.tasks.question_answering.task import QuestionAnsweringOptions, QuestionAnsweringTask

__all__ = ["QuestionAnsweringOptions", "QuestionAnsweringTask"]
