"""Training: strategy scope → build → compile (AdamW + warm-up) → `Model.fit`.

`train()` fine-tunes any task, `evaluate()` scores a finished run, and
`pretrain()` (`tfsft pretrain`) trains a tokenizer, pretrains with `train()` and
saves a KerasHub preset that fine-tuning loads.

One loop serves CPU, GPU, multi-worker and TPU through `tf.distribute`. Training
is cut into *intervals* of `train.eval_every_steps` steps (Keras "epochs" over a
repeated dataset): each interval ends with validation, the best checkpoint and a
`BackupAndRestore` backup, so a killed run resumes at the last interval with the
same weights, optimizer state, learning-rate step and batch order.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras

from tfsft import distribute, evaluation
from tfsft.curves import plot_curves
from tfsft.config import ConfigError, ExperimentConfig, save_config
from tfsft.data.pipeline import evaluation_dataset, static_lengths, training_dataset
from tfsft.distillation import Teacher
from tfsft.models import fast_matmul
from tfsft.models.backbones import load_backbone
from tfsft.optimization import make_optimizer
from tfsft.peft.setup import TrainableWeights
from tfsft.run_dir import load_run, save_artifacts, save_data_sources, save_preset, without_training_state
from tfsft.tasks import get_task
from tfsft.tasks.pretraining import prepare_tokenizer


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Stops with a clear message when the training loss is not finite."""

    def __init__(self, learning_rate: float):
        super().__init__()
        self.learning_rate = learning_rate

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise TrainingDivergedError(
                f"the training loss became {float(loss)} at step {step}. Try a lower train.learning_rate "
                f"(now {self.learning_rate}), train.precision: float32, or check the data for bad labels."
            )


class BestWeights(keras.callbacks.Callback):
    """Saves the weights, without optimizer state, whenever `monitor` improves at the end of an interval.

    (Keras' `ModelCheckpoint` also writes the optimizer's state, twice the
    weights again with Adam; only `BackupAndRestore` needs that, to resume.)

    Args:
        path: the `.weights.h5` file.
        monitor: the logged metric, e.g. "val_accuracy" (lower is better for a loss or error).
        best: the value to beat (e.g. from the history of an interrupted run).
    """

    def __init__(self, path: Path, monitor: str, best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ConfigError("the config", [("train.monitor", f"{self.monitor!r} is not logged; "
                                              f"the logged metrics are {', '.join(logs)}")])
        value = float(logs[self.monitor])
        if self.best is None or (value < self.best if _mode(self.monitor) == "min" else value > self.best):
            self.best = value
            with without_training_state(self.model):
                self.model.save_weights(self.path)


@dataclass
class StepPlan:
    """How many optimizer steps, cut into equal validation intervals."""

    steps_per_epoch: int  # batches in one pass over the training data
    interval: int  # steps between validations / checkpoints
    intervals: int

    @property
    def total_steps(self) -> int:
        return self.interval * self.intervals


def plan_steps(num_rows: int, train_config) -> StepPlan:
    """`num_rows`: encoded training rows (packed rows, QA/NER windows), which is what one epoch passes over."""
    steps_per_epoch = max(1, num_rows // train_config.batch_size)
    total = train_config.max_steps or max(1, math.ceil(train_config.epochs * steps_per_epoch))
    wanted = min(train_config.eval_every_steps or steps_per_epoch, total)
    intervals = math.ceil(total / wanted)
    interval = math.ceil(total / intervals)
    interval += -interval % train_config.steps_per_execution  # whole calls of steps_per_execution steps
    return StepPlan(steps_per_epoch, interval, intervals)


def configure_runtime(config: ExperimentConfig) -> None:
    """Seeds every RNG and sets the global precision policy (`restores_dtype_policy` puts it back)."""
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.train.precision)


def restores_dtype_policy(function):
    """Decorator: the global Keras dtype policy after the call is the one before it.

    `train()` sets `train.precision` globally while it builds the model; a
    process that imports tfsft as a library keeps its own policy afterwards.
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        before = keras.mixed_precision.dtype_policy()
        try:
            return function(*args, **kwargs)
        finally:
            keras.mixed_precision.set_dtype_policy(before)
    return wrapper


def _best_so_far(history_csv: Path, monitor: str):
    """The best monitored value in an earlier (interrupted) run's history."""
    if not history_csv.exists():
        return None
    with open(history_csv, newline="") as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    if not values:
        return None
    return min(values) if _mode(monitor) == "min" else max(values)


def _mode(monitor: str) -> str:
    return "min" if "loss" in monitor or "error" in monitor else "max"


def _completed_intervals(backup_dir: Path) -> int:
    meta = backup_dir / "training_metadata.json"
    return json.loads(meta.read_text())["epoch"] if meta.exists() else 0


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict  # on the validation split (empty without one)
    seconds: float
    steps: int
    test_metrics: dict = field(default_factory=dict)  # on the test split, when the config has one
    chief: bool = True  # False on the other workers of multi-worker training (their run directory is deleted)


@restores_dtype_policy
@fast_matmul.fast_projections()
def train(config: ExperimentConfig, log: Callable[[str], None] = print,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Fine-tunes the configured model and evaluates it on the validation and test splits (those given).

    Args:
        config: the validated experiment.
        log: where progress lines go.
        callbacks: extra Keras callbacks, run after tfsft's own.

    Example:
        >>> from tfsft.experiment import load_config
        >>> result = train(load_config("configs/sst2_minilm.yaml"))
        >>> result.metrics["accuracy"]
    """
    start = time.time()
    strategy = distribute.make_strategy(config.train)  # first: MultiWorkerMirroredStrategy precedes any TF op
    run = distribute.write_dir(config.run_path, strategy)  # the run directory, or a non-chief worker's own
    run.mkdir(parents=True, exist_ok=True)
    save_config(config, run / "config.yaml")
    save_data_sources(run, config.data)
    configure_runtime(config)
    task = get_task(config)

    train_examples = task.read("train")
    val_examples = task.read("validation") if config.data.has_split("validation") else None
    test_examples = task.read("test") if config.data.has_split("test") else None
    for examples in (train_examples, val_examples, test_examples):
        if examples is None:
            continue
        describe = getattr(examples, "describe", None)  # per-label counts, where examples have labels
        log(describe() if describe else f"{examples.source}: {len(examples):,} examples")
        if examples.skipped_empty:
            log(f"{examples.source}: skipped {examples.skipped_empty} rows with empty text")
    task.fit_labels(train_examples)

    with strategy.scope():
        teacher = Teacher(config, task) if config.train.distillation else None  # checked against task, labels
        if teacher is not None:  # model.backbone (its tokenizer checked), or the teacher's first student_layers
            backbone, tokenizer = teacher.student_backbone(config.model)
        elif hasattr(task, "build_backbone"):  # e.g. a tokenizer trained on the training data first
            backbone, tokenizer = task.build_backbone(config.model, train_examples, run)
        else:
            backbone, tokenizer = load_backbone(config.model)
        encoder = task.make_encoder(tokenizer, config.model.sequence_length)
        log(f"Tokenizing {len(train_examples):,} training examples ...")
        train_split = task.encode(train_examples, encoder, training=True)
        log(f"  mean length {train_split.mean_tokens:.1f} tokens; {train_split.truncated} truncated "
            f"to {config.model.sequence_length}")
        if train_split.size != len(train_examples):  # packed rows, or windows of long texts
            log(f"  {train_split.size:,} rows of {config.model.sequence_length} tokens or fewer")
        val_split = task.encode(val_examples, encoder, training=False) if val_examples else None
        test_split = task.encode(test_examples, encoder, training=False) if test_examples else None
        for name, split in (("validation", val_split), ("test", test_split)):
            if split is not None and split.truncated:
                log(f"  {name}: {split.truncated} of {split.size} truncated")

        plan = plan_steps(train_split.size, config.train)
        done = _completed_intervals(run / "backup")
        if done:
            log(f"Resuming from step {done * plan.interval} (interval {done}/{plan.intervals})")
        static = distribute.needs_static_shapes(config.train, strategy)
        train_ds = distribute.distribute_batches(strategy, training_dataset(
            train_split,
            pad_id=encoder.pad_id,
            batch_size=config.train.batch_size,
            bucket_boundaries=config.train.bucket_boundaries,
            sequence_length=config.model.sequence_length,
            seed=config.seed,
            shuffle_buffer=config.train.shuffle_buffer,
            skip_batches=done * plan.interval,
            batch_transform=getattr(task, "batch_transform", None),
            static_shapes=static,
        ), config.train.batch_size)
        lengths = static_lengths(config.train.bucket_boundaries, config.model.sequence_length) if static else None
        val_ds = (evaluation_dataset(val_split, pad_id=encoder.pad_id, batch_size=config.train.eval_batch_size,
                                     lengths=lengths) if val_split else None)

        model = task.build_model(backbone) if teacher is None else teacher.build_student(task, backbone)
        trainable = TrainableWeights(model, backbone, config, log)  # model.lora, train.freeze; logs the counts
        if teacher is not None:  # fit trains a Distiller: the student, with the teacher's soft labels in the loss
            model = teacher.distiller(model, task, log)
        model.compile(
            optimizer=make_optimizer(config.train, plan.total_steps, static_shapes=static),
            loss=task.loss(),
            metrics=task.metrics(),
            jit_compile=config.train.jit_compile,
            steps_per_execution=config.train.steps_per_execution,
        )
        distribute.keras_multi_worker_build(model, strategy)
    monitor = config.train.monitor or (task.default_monitor if val_ds is not None else "loss")
    best_path = run / "checkpoints" / "best.weights.h5"
    best_path.parent.mkdir(exist_ok=True)
    (run / "logs").mkdir(exist_ok=True)
    best_weights = BestWeights(best_path, monitor,
                               _best_so_far(run / "logs" / "history.csv", monitor) if done else None)
    user_callbacks, callbacks = list(callbacks), [
        StopOnNaN(config.train.learning_rate),
        best_weights,
        *trainable.callbacks(run, best_weights),  # LoRA: A and B through resumes and the best checkpoint
        keras.callbacks.BackupAndRestore(str(run / "backup"), save_freq="epoch",
                                         delete_checkpoint=not config.train.keep_backup),
        keras.callbacks.CSVLogger(str(run / "logs" / "history.csv"), append=bool(done)),
        keras.callbacks.TensorBoard(str(run / "logs"), update_freq=50, write_graph=False),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=_mode(monitor), patience=config.train.early_stopping_patience))
    callbacks += user_callbacks
    # BERT's pooler is unused unless task.pooling is "pooler"; Keras would warn each run.
    warnings.filterwarnings("ignore", message="Gradients do not exist for variables .*pooled_dense")
    # Keras warns when the (finite) validation dataset ends; training data repeats forever.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    log(f"Training {plan.total_steps} steps ({plan.intervals} x {plan.interval}; "
        f"{plan.steps_per_epoch} steps = 1 epoch) at batch {config.train.batch_size}, "
        f"precision {config.train.precision}, strategy {type(strategy).__name__} "
        f"({strategy.num_replicas_in_sync} replicas)")
    model.fit(
        train_ds,
        epochs=plan.intervals,
        steps_per_epoch=plan.interval,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=config.train.verbose,
        shuffle=False,  # the dataset is shuffled (seeded) by the pipeline
    )
    if best_path.exists():
        with without_training_state(model):
            model.load_weights(best_path)
    if teacher is not None:
        model = model.student  # the run keeps the student alone, as any run keeps its model
    save_artifacts(run, model, tokenizer, task)
    trainable.finish(run)  # LoRA: adapter.safetensors (the best interval's A, B and head)
    shutil.rmtree(best_path.parent, ignore_errors=True)  # model.keras holds the best weights: one copy is enough
    plot_curves(run / "logs" / "history.csv", run / "curves.png", monitor, plan.interval, _mode(monitor) == "min")

    batch = config.train.eval_batch_size
    metrics = (_score(task, model, val_examples, val_split, encoder, batch, "validation", run, run / "metrics.json",
                      log) if val_split else {})
    test_metrics = (_score(task, model, test_examples, test_split, encoder, batch, "test", run / "eval_test",
                           run / "metrics_test.json", log) if test_split else {})
    if val_split is None:
        log(f"No validation split in the config (data.files.validation or data.tfds.validation): nothing was "
            f"validated, and model.keras holds the weights of the interval with the best {monitor}")
    distribute.discard_worker_dir(run, strategy, config.train.keep_backup)
    seconds = time.time() - start
    log(f"Finished in {seconds / 60:.1f} min; run directory {run}")
    return TrainResult(run, metrics, seconds, plan.total_steps, test_metrics, chief=distribute.is_chief(strategy))


def _score(task, model, examples, encoded, encoder, batch_size: int, split: str, out_dir: Path,
           metrics_path: Path, log) -> dict:
    """`task.evaluate` on one split: the metrics, also written to `metrics_path` and logged as a table."""
    metrics = task.evaluate(model, examples, encoded, encoder, batch_size, out_dir)
    metrics["split"] = split
    evaluation.write_metrics(metrics, metrics_path)
    log(evaluation.format_table(metrics, split))
    return metrics


@fast_matmul.fast_projections()
def evaluate(run_dir: str | Path, split: str = "validation", log: Callable[[str], None] = print, *,
             data_dir: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """Evaluates a finished run on `split`; writes `metrics_<split>.json`.

    The data is what the run was trained on (`<run_dir>/data.json`), unless
    `data_dir` or `overrides` (`data.files.test=...`, as for `tfsft train --set`) say otherwise.
    """
    loaded = load_run(run_dir, data_dir=data_dir, overrides=overrides)
    config = loaded.config
    keras.mixed_precision.set_dtype_policy(config.train.precision)
    examples = loaded.task.read(split)
    encoder = loaded.task.make_encoder(loaded.tokenizer, config.model.sequence_length)
    encoded = loaded.task.encode(examples, encoder, training=False)
    return _score(loaded.task, loaded.model, examples, encoded, encoder, config.train.eval_batch_size, split,
                  loaded.path / f"eval_{split}", loaded.path / f"metrics_{split}.json", log)


@restores_dtype_policy
@fast_matmul.fast_projections()
def baseline(config: ExperimentConfig, split: str = "validation", log: Callable[[str], None] = print) -> dict:
    """Scores the configured model *before* fine-tuning on `split` (e.g. an LLM's zero-shot accuracy).

    The same reading, encoding and `task.evaluate` as after training, on the
    backbone as loaded (a task head, where there is one, is freshly initialised,
    so the figure is only meaningful for tasks without new weights, such as
    instruction tuning). Writes `<run_dir>/baseline/metrics_<split>.json`.
    """
    configure_runtime(config)
    task = get_task(config)
    if config.task.name != "instruction_tuning":
        log(f"Note: task {config.task.name} adds freshly initialised head weights; this baseline scores them untrained")
    train_examples = task.read("train")
    task.fit_labels(train_examples)
    out = config.run_path / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(task, "build_backbone"):
        backbone, tokenizer = task.build_backbone(config.model, train_examples, out)
    else:
        backbone, tokenizer = load_backbone(config.model)
    examples = task.read(split)
    encoder = task.make_encoder(tokenizer, config.model.sequence_length)
    encoded = task.encode(examples, encoder, training=False)
    model = task.build_model(backbone)
    return _score(task, model, examples, encoded, encoder, config.train.eval_batch_size, f"{split} (before training)",
                  out, out / f"metrics_{split}.json", log)


@dataclass
class PretrainResult:
    run_dir: Path
    preset_dir: Path
    metrics: dict
    seconds: float


def pretrain(config, log: Callable[[str], None] = print) -> PretrainResult:
    """Tokenizer → pretraining with `tfsft.training.train` → `<run_dir>/preset/`.

    Args:
        config: an `ExperimentConfig` with task `masked_lm` or `causal_lm` and
            `train.max_steps` set (pretraining budgets are counted in steps).
        log: where progress lines go.

    Returns:
        The run directory, the preset folder, held-out metrics and seconds.

    Example:
        >>> result = pretrain(load_config("configs/pretrain_bert_small.yaml"))
        >>> keras_hub.models.Backbone.from_preset(str(result.preset_dir))
    """
    start = time.time()
    problems = []
    if config.task.name not in ("masked_lm", "causal_lm"):
        problems.append(("task.name", f"tfsft pretrain runs masked_lm or causal_lm. Received: {config.task.name!r}"))
    if config.train.max_steps is None:
        problems.append(("train.max_steps", "required for pretraining (its budget is counted in optimizer steps)"))
    expected = {"masked_lm": "bert", "causal_lm": "gpt2"}.get(config.task.name)
    if expected and config.model.architecture != expected:
        problems.append(("model.architecture", (f"task {config.task.name} needs {expected}. "
                         f"Received: {config.model.architecture!r}")))
    if problems:
        raise ConfigError("pretraining config", problems)
    if config.model.backbone == "random":
        prepare_tokenizer(config, get_task(config), log)
    result = train(config, log)
    preset = save_preset(result.run_dir, result.run_dir / "preset")
    state = json.loads((result.run_dir / "task.json").read_text(encoding="utf-8"))
    for split, stats in state.get("corpus", {}).items():
        log(f"{split} corpus: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in stats.items()))
    log(f"Saved the pretrained backbone + tokenizer to {preset} (fine-tune with model.backbone: {preset})")
    return PretrainResult(result.run_dir, preset, result.metrics, time.time() - start)
