"""Instruction tuning: supervised fine-tuning of a causal LM on prompt → response; one file per role.

- `options.py`: `InstructionTuningOptions` (`task: {name: instruction_tuning}`);
- `records.py`: JSON/JSONL/TSV/CSV files → conversations (prompt/completion,
  Alpaca, chat messages, or format templates over a table's columns);
- `templates.py`: chatml, alpaca, plain → segments marked trainable; the
  rendered prompt for serving;
- `encoding.py`: segments → token ids, response-only loss weights,
  truncation; served prompts → ids; generated ids → text;
- `task.py`: the task (data → CausalLM → masked loss → evaluation → export);
- `evaluation.py`: greedy generation on the held-out split, exact match / BLEU / chrF / ROUGE-L;
- `sampling.py`: KV-cache generation in TF ops; `serving.py`: the SavedModel
  module; `text_generation.py`: generating from Python and `tfsft generate`.
"""

from tfsft.tasks.instruction_tuning.options import InstructionTuningOptions
from tfsft.tasks.instruction_tuning.task import InstructionTuningTask

__all__ = ["InstructionTuningOptions", "InstructionTuningTask"]
