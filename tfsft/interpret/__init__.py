"""Interpretability and robustness of fine-tuned classifiers, regressors and taggers: one file per role.

- `split.py`: the task model split at its token embedding (run from embeddings on, in float32);
- `attributions.py`: integrated gradients over the input embeddings; word pieces → words;
- `attention.py`: attention probabilities per layer and head;
- `explanation.py`: `explain(run_dir, text)`, the answer, its attributions and attention maps;
- `report.py`: an explanation as HTML, PNG and JSON;
- `perturbations.py`: seeded casing, typo, punctuation and whitespace perturbations;
- `robustness_report.py`: `robustness(run_dir, split)`, the task's metric and flips under each perturbation.

Sits above the tasks and the run directory in the import graph; only the CLI imports it.
"""

from tfsft.interpret.explanation import Explanation, explain
from tfsft.interpret.robustness_report import robustness
from tfsft.interpret.split import InterpretError

__all__ = ["Explanation", "InterpretError", "explain", "robustness"]
