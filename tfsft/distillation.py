"""Knowledge distillation (`train.distillation`): a student trained on a finished run's soft labels.

    loss = α · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)) + (1 − α) · CE(y, z_student)

(Hinton et al., 2015), for text classification (one KL per example, weighted and
averaged like the task's cross-entropy) and token classification (one KL per
labelled position: the positions, and their weights, of the task's own
`TagCrossentropy`; padding, special tokens and non-first subwords count for nothing).

* `Teacher` loads the teacher run (`tfsft.run_dir.load_run`) and checks it against
  the student: same task, labels, tokenizer (vocabulary) and inputs. It gives the
  student's backbone: `model.backbone` as in any run, or with `student_layers: N`
  the teacher's own backbone cut to its first N transformer layers (its config with
  `num_layers=N`; the embeddings, those layers and, once the task model is built,
  the head copied from the teacher).
* `Distiller` is the Keras model `fit` trains: it calls the student, and in each
  training step runs the teacher on the same batch (inference mode, no gradient;
  so shuffling and length bucketing need no care) and adds the KL term, in float32,
  to the task's compiled loss. Validation steps score the task loss alone, as in
  any run. The teacher is kept out of Keras' tracking, so it is neither trained nor
  saved: the Distiller's weights, checkpoints and backups are the student's, and
  the run directory gets the student alone (`Distiller.student`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import keras_hub
import tensorflow as tf

from tfsft.config import ConfigError, ExperimentConfig
from tfsft.models.backbones import load_backbone
from tfsft.peft.setup import parameter_count
from tfsft.run_dir import load_run

RUN_FILES = ("config.yaml", "task.json", "model.keras", "tokenizer")
TEACHER_KEY = "train.distillation.teacher"


def _problem(key: str, message: str) -> ConfigError:
    return ConfigError("the config", [(key, message)])


class _Untracked:
    """Holds an object where Keras' tracking does not look: its weights are not the holder's,
    so they are neither trained nor saved with it."""

    def __init__(self, value):
        self.value = value


class SoftTargetKL(keras.losses.Loss):
    """KL(softmax(teacher / T) ‖ softmax(student / T)) over the last axis, computed in float32.

    Called as `loss(teacher_logits, student_logits, sample_weight)` and reduced as
    `reduction` says (the task loss's reduction: `"sum_over_batch_size"`, Σ w·KL / B, for
    classification; `"mean_with_sample_weight"`, Σ w·KL / Σ w, for token classification).
    """

    def __init__(self, temperature: float = 2.0, name: str = "soft_target_kl", **kwargs):
        kwargs["dtype"] = "float32"  # also under mixed_bfloat16
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, teacher_logits, student_logits):
        log_p = tf.nn.log_softmax(teacher_logits / self.temperature)
        log_q = tf.nn.log_softmax(student_logits / self.temperature)
        return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


class Distiller(keras.Model):
    """The model `fit` trains in a distillation run: the student, with the teacher's soft labels in its loss.

    Args:
        student: the task model being trained (what the run saves).
        teacher: the teacher's task model; frozen and untracked (not in this model's weights).
        temperature: T.
        alpha: α, the weight of the distillation term (0: the task loss alone).
        token_level: token classification: only labelled positions (target > 0) count, times their weights.
        reduction: the task loss's reduction (`SoftTargetKL`).

    Example:
        >>> distiller = Distiller(student, teacher, temperature=2.0, alpha=0.5)
        >>> distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> distiller.fit(dataset)                # trains student's weights; student.save(...) after
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, *, temperature: float = 2.0, alpha: float = 0.5,
                 token_level: bool = False, reduction: str = "sum_over_batch_size", name: str = "distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        self.student = student
        teacher.trainable = False
        self._teacher = _Untracked(teacher)  # a property returning it would be saved: Keras saves what dir() shows
        self._teacher_inputs = _input_names(teacher)
        self.temperature, self.alpha, self.token_level = float(temperature), float(alpha), token_level
        self.soft_loss = SoftTargetKL(temperature, reduction=reduction)
        self.built = True

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def teacher_logits(self, inputs):
        """The teacher's logits (float32, no gradient) for a batch of the student's inputs."""
        if self._teacher_inputs is not None:
            inputs = {name: inputs[name] for name in self._teacher_inputs}
        return tf.stop_gradient(tf.cast(self._teacher.value(inputs, training=False), tf.float32))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task_loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training or self.alpha == 0.0:
            return task_loss  # validation (and α = 0): the task's own loss, as in any run
        weights = sample_weight
        if self.token_level:  # the positions TagCrossentropy counts: targets are label id + 1, 0 = no label
            weights = tf.cast(tf.cast(y, tf.int32) > 0, tf.float32)
            if sample_weight is not None:
                weights *= tf.cast(tf.reshape(sample_weight, tf.shape(weights)), tf.float32)
        soft = self.soft_loss(self.teacher_logits(x), y_pred, sample_weight=weights)
        return self.alpha * self.temperature ** 2 * soft + (1.0 - self.alpha) * tf.cast(task_loss, tf.float32)


def _input_names(model) -> tuple[str, ...] | None:
    return tuple(model.input) if isinstance(model.input, dict) else None


def find_backbone(model: keras.Model):
    """The KerasHub-style backbone layer of a task model (None when its layers are inlined, as with `task.casing`)."""
    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    return found[0] if len(found) == 1 else None


def copy_weights(source: keras.Layer, target: keras.Layer) -> None:
    """Sets the weights of each of `target`'s layers to those of `source`'s layer of the same name,
    recursing into nested models (a task model's backbone).

    Raises:
        ValueError: a layer of `target` with weights has no namesake in `source`, or other weight shapes.
    """
    namesakes = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        twin = namesakes.get(layer.name)
        if twin is None:
            raise ValueError(f"{source.name} has no layer {layer.name!r}")
        if isinstance(layer, keras.Model) and isinstance(twin, keras.Model):
            copy_weights(twin, layer)
            continue
        ours, theirs = [tuple(w.shape) for w in layer.weights], [tuple(w.shape) for w in twin.weights]
        if ours != theirs:
            raise ValueError(f"layer {layer.name!r} has weights of shapes {theirs} in {source.name}, {ours} here")
        for weight, value in zip(layer.weights, twin.weights):
            weight.assign(keras.ops.convert_to_tensor(value))


def truncated_backbone(backbone, num_layers: int):
    """A new backbone like `backbone` with only its first `num_layers` transformer layers: its config with
    `num_layers` changed, the embeddings, those layers (and the pooler) copied. The dtype policy is the
    global one (`train.precision`), not the one `backbone` was saved with.

    Example:
        >>> teacher = keras_hub.models.BertBackbone(vocabulary_size=60, num_layers=6, ...)
        >>> student = truncated_backbone(teacher, 2)   # embeddings, transformer_layer_0 and _1 of teacher's

    Raises:
        ConfigError: naming `train.distillation.student_layers`.
    """
    config = backbone.get_config()
    kind = type(backbone).__name__
    if "num_layers" not in config:
        raise _problem("train.distillation.student_layers", f"the teacher's {kind} has no num_layers to cut")
    if not 1 <= num_layers <= config["num_layers"]:
        raise _problem("train.distillation.student_layers", (f"the teacher's {kind} has {config['num_layers']} "
                                                             f"transformer layers. Received: {num_layers}"))
    config = {key: value for key, value in config.items() if key not in ("dtype", "trainable")}
    student = type(backbone).from_config({**config, "num_layers": num_layers})
    try:
        copy_weights(backbone, student)
    except ValueError as e:
        raise _problem("train.distillation.student_layers", f"cannot copy the teacher's {kind} layer by layer: "
                                                            f"{e}") from None
    return student


def _vocabulary(tokenizer) -> list | None:
    try:
        return list(tokenizer.get_vocabulary())
    except (AttributeError, NotImplementedError, ValueError):
        return None


def tokenizer_difference(teacher, student) -> str | None:
    """How two tokenizers differ (class, vocabulary, lowercasing), or None when they tokenize alike."""
    def describe(tokenizer):
        vocabulary = _vocabulary(tokenizer)
        size = f"{len(vocabulary):,} tokens" if vocabulary is not None else "?"
        case = "" if not hasattr(tokenizer, "lowercase") else ", lowercase" if tokenizer.lowercase else ", cased"
        return f"{type(tokenizer).__name__} with {size}{case}"

    ours, theirs = _vocabulary(student), _vocabulary(teacher)
    differs = (type(teacher) is not type(student) or ours != theirs
               or getattr(teacher, "lowercase", None) != getattr(student, "lowercase", None))
    if not differs:
        return None
    where = ""
    if ours is not None and theirs is not None and ours != theirs:
        i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(ours), len(theirs)))
        where = (f" (first difference at id {i}: {theirs[i] if i < len(theirs) else None!r} vs "
                 f"{ours[i] if i < len(ours) else None!r})")
    return f"teacher {describe(teacher)}, student {describe(student)}{where}"


class Teacher:
    """The teacher run of `train.distillation`, loaded and checked against the student's task.

    Args:
        config: the student's experiment.
        task: the student's task, its labels fixed (`fit_labels`).

    Raises:
        ConfigError: naming `train.distillation.teacher`: not a finished run directory, another task,
            another label set.
    """

    def __init__(self, config: ExperimentConfig, task):
        self.settings = config.train.distillation
        self.path = Path(self.settings.teacher)
        if not self.path.is_dir():
            raise _problem(TEACHER_KEY, f"{self.path} is not a directory; expected a finished tfsft run directory "
                                        "(`tfsft train` writes one)")
        missing = [name for name in RUN_FILES if not (self.path / name).exists()]
        if missing:
            raise _problem(TEACHER_KEY, f"{self.path} has no {', '.join(missing)}; expected a finished tfsft run "
                                        f"directory (`tfsft train` writes {', '.join(RUN_FILES)})")
        self.run = load_run(self.path)
        self.model = self.run.model
        self.backbone = find_backbone(self.model)  # None for a task.casing model
        teacher_task, student_task = self.run.config.task.name, config.task.name
        if teacher_task != student_task:
            raise _problem(TEACHER_KEY, f"the teacher {self.path} is a {teacher_task} model, the student a "
                                        f"{student_task} model (task.name)")
        if list(self.run.task.labels) != list(task.labels):
            raise _problem(TEACHER_KEY, f"the teacher's labels (task.labels) differ from the student's: teacher "
                                        f"{self.path} {list(self.run.task.labels)}, student {list(task.labels)}")

    def student_backbone(self, model_config) -> tuple:
        """`(backbone, tokenizer)` of the student: `model.backbone` as in any run, its tokenizer checked against
        the teacher's; with `student_layers: N` the teacher's backbone cut to its first N layers, and its tokenizer.

        Raises:
            ConfigError: another tokenizer (`train.distillation.teacher`), a teacher without a separate backbone
                or fewer layers (`train.distillation.student_layers`), positions fewer than `model.sequence_length`.
        """
        if self.settings.student_layers is None:
            backbone, tokenizer = load_backbone(model_config)
            difference = tokenizer_difference(self.run.tokenizer, tokenizer)
            if difference:
                raise _problem(TEACHER_KEY, (f"the teacher's tokenizer differs from the student's (model.backbone "
                                             f"{self.run.config.model.backbone!r} in {self.path}, "
                                             f"{model_config.backbone!r} here): {difference}"))
        else:
            if self.backbone is None:
                raise _problem("train.distillation.student_layers", (
                    f"the teacher {self.path} ({self.model.name}) has no backbone layer to cut (a task.casing "
                    "model calls the backbone's layers one by one); give the student's model.backbone instead"))
            backbone, tokenizer = truncated_backbone(self.backbone, self.settings.student_layers), self.run.tokenizer
        positions = self.backbone.get_config().get("max_sequence_length") if self.backbone is not None else None
        if positions is not None and positions < model_config.sequence_length:
            raise _problem("model.sequence_length", f"the teacher {self.path} takes at most {positions} tokens. "
                                                    f"Received: {model_config.sequence_length}")
        return backbone, tokenizer

    def build_student(self, task, backbone) -> keras.Model:
        """`task.build_model(backbone)`; with `student_layers`, its head (and backbone) set to the teacher's."""
        student = task.build_model(backbone)
        if self.settings.student_layers is not None:
            try:
                copy_weights(self.model, student)
            except ValueError as e:
                raise _problem("train.distillation.student_layers", f"cannot copy the teacher's head: {e}") from None
        return student

    def distiller(self, student: keras.Model, task, log: Callable[[str], None] = print) -> Distiller:
        """The `Distiller` of `student` (built by `build_student`) and this teacher; logs both sizes."""
        teacher_inputs, student_inputs = _input_names(self.model) or [], _input_names(student) or []
        lacking = [name for name in teacher_inputs if name not in student_inputs]
        if lacking:
            key = "task.casing" if "token_casing" in lacking else TEACHER_KEY
            raise _problem(key, f"the teacher {self.path} takes {', '.join(lacking)}, which the student's batches "
                                f"lack (the student's inputs: {', '.join(student_inputs)})")
        settings = self.settings
        log(f"Distilling from {self.path} (T={settings.temperature:g}, alpha={settings.alpha:g}): teacher "
            f"{parameter_count(self.model.weights):,} params, student {parameter_count(student.weights):,} params")
        if settings.student_layers is not None:
            teacher_layers = self.backbone.get_config()["num_layers"]
            log(f"  the student starts as the teacher's embeddings, first {settings.student_layers} of its "
                f"{teacher_layers} transformer layers and head (model.backbone is not loaded)")
        return Distiller(student, self.model, temperature=settings.temperature, alpha=settings.alpha,
                         token_level=task.problem == "token_classification", reduction=task.loss().reduction)
