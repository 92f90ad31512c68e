"""Token classification (NER): one file per role.

- `task.py`: options, the task (data → model → loss → evaluation → export);
- `windows.py`: words → first-subword-aligned WordPiece windows (the encoder);
- `decoding.py`: tag tables, Viterbi over valid IOB2, entity chunks, metrics;
- `serving.py`: the SavedModel module (raw text or pre-split words in).
"""

from tfsft.tasks.token_classification.task import (
    TokenClassificationOptions,
    TokenClassificationTask,
)

__all__ = ["TokenClassificationOptions", "TokenClassificationTask"]
