"""Token classification (NER, and plain tags such as part of speech): one file per role.

- `task.py`: options, the task (data → model → loss → evaluation → export);
- `windows.py`: words → first-subword-aligned WordPiece windows (the encoder);
- `decoding.py`: tag tables, Viterbi over valid IOB2, entity chunks, metrics;
- `words.py`: the word splitters of serving (CoNLL-2003 style, Penn Treebank, whitespace);
- `serving.py`: the SavedModel module (raw text or pre-split words in).
"""

from tfsft.tasks.token_classification.task import (
    TokenClassificationOptions,
    TokenClassificationTask,
)

__all__ = ["TokenClassificationOptions", "TokenClassificationTask"]
