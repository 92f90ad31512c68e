"""Tasks: a dict from task name to the class that builds, trains and serves it.

A task class is constructed as `Task(options, data_config)` and provides:
`fit_labels(train_examples)`, `targets(examples)`, `encode(examples, encoder,
training)`, `build_model(backbone)`, `loss()`, `metrics()`, `default_monitor`,
`evaluate(...)`, `serving_outputs(model_outputs)`, and `state()`/`load_state()`
for what must be saved with the model (e.g. the label vocabulary).
"""

from tfsft.tasks.text_classification import TextClassificationTask, TextRegressionTask

TASKS = {
    "text_classification": TextClassificationTask,
    "text_regression": TextRegressionTask,
}


def get_task(config):
    """The task object for an `ExperimentConfig`."""
    return TASKS[config.task.name](config.task, config.data)
