"""Tasks: one explicit table from task name to the class that builds, trains and serves it.

A task class carries its options dataclass as `options_class` (validated by
`tfsft.config` under `task:`), is constructed as `Task(options, data_config)`
and provides what `training.py` and `export.py` call, so those stay
task-agnostic (tasks never import the training loop or the run directory):

- data: `read(split) -> examples`, `fit_labels(train_examples)`,
  `make_encoder(tokenizer, sequence_length)` (a Keras layer, used by tf.data
  and inside the SavedModel), `encode(examples, encoder, training) -> EncodedSplit`,
  and optionally `batch_transform(*batch)` applied to each padded training batch;
- model: `build_model(backbone)`, `loss()`, `metrics()`, `default_monitor`;
- evaluation: `evaluate(model, examples, encoded, encoder, batch_size, out_dir)`
  returning a metrics dict;
- serving: `serving_module(model, encoder)` (a `tf.Module` whose `serve`
  tf.function is the `serving_default` signature; extra signatures come
  from its `extra_signatures()` when defined) and `sample_inputs()` for the export check;
- `state()` / `load_state(state)`: what is saved with the model (labels, ...).
- optionally `build_backbone(model_config, train_examples, run_dir) -> (backbone,
  tokenizer)`, used instead of `load_backbone` (e.g. to train a tokenizer first).
"""

from tfsft.tasks.instruction_tuning import InstructionTuningTask
from tfsft.tasks.pretraining import CausalLMTask, MaskedLMTask
from tfsft.tasks.question_answering import QuestionAnsweringTask
from tfsft.tasks.text_classification import TextClassificationTask, TextRegressionTask
from tfsft.tasks.token_classification import TokenClassificationTask
from tfsft.tasks.translation import TranslationTask

TASKS = {
    "text_classification": TextClassificationTask,
    "text_regression": TextRegressionTask,
    "token_classification": TokenClassificationTask,
    "masked_lm": MaskedLMTask,
    "causal_lm": CausalLMTask,
    "translation": TranslationTask,
    "question_answering": QuestionAnsweringTask,
    "instruction_tuning": InstructionTuningTask,
}


def get_task(config):
    """The task object for an `ExperimentConfig`."""
    return TASKS[config.task.name](config.task, config.data)
