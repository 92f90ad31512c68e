"""The run directory: everything one experiment writes, and how to load it back.

Layout::

    <run_dir>/config.yaml            the resolved config
              data.json              where the splits were read from, resolved at training time
              task.json              task state (label vocabulary, ...)
              tokenizer/             the tokenizer (KerasHub preset format)
              model.keras            the trained task model (best weights; no optimizer state; LoRA merged)
              adapter.safetensors    LoRA runs: the adapter alone (A, B, head; `tfsft.peft.adapter`)
              checkpoints/best.weights.h5   the best weights so far, while training
              backup/                weights + optimizer state while training (resume; `train.keep_backup`)
              logs/                  TensorBoard events; history.csv
              curves.png             training/validation loss and metric per interval, kept checkpoint marked
              metrics.json           evaluation metrics; confusion_matrix.png
              export/<name>/<ver>/   the SavedModel for TF Serving
              preset/                backbone + tokenizer as a KerasHub preset (`tfsft pretrain`)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub  # noqa: F401  (registers the KerasHub classes for deserialization)
import yaml

from tfsft.config import DataConfig, ExperimentConfig
from tfsft.experiment import config_from_mapping
from tfsft.tasks import get_task

DATA_SOURCES = "data.json"


class RunDirError(ValueError):
    """A run directory is missing something it should hold."""


@dataclass
class LoadedRun:
    config: ExperimentConfig
    task: object
    model: keras.Model
    tokenizer: object
    path: Path


@contextlib.contextmanager
def without_training_state(model):
    """`model` with its optimizer and compile settings set aside, so that `save`,
    `save_weights` and `load_weights` handle only what inference needs: with
    Adam's two moments per weight, a third of the bytes."""
    optimizer, compiled = getattr(model, "optimizer", None), model.compiled
    model.optimizer, model.compiled = None, False
    try:
        yield model
    finally:
        model.optimizer, model.compiled = optimizer, compiled


def save_artifacts(path: Path, model, tokenizer, task) -> None:
    """Writes model (without optimizer state), tokenizer and task state (each replaced atomically)."""
    tmp = path / "model.keras.tmp.keras"
    with without_training_state(model):
        model.save(tmp)
    tmp.replace(path / "model.keras")
    tokenizer_dir = path / "tokenizer"
    staging = path / "tokenizer.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_to_preset(str(staging))
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    staging.replace(tokenizer_dir)
    (path / "task.json").write_text(json.dumps(task.state(), indent=2) + "\n", encoding="utf-8")


def load_model(path: Path) -> keras.Model:
    """A saved `model.keras`, uncompiled.

    KerasHub task models (`GPT2CausalLM`, `T5Seq2SeqLM`, ...) compile
    themselves with a default optimizer when built, which the file, saved
    without optimizer state, has nothing for: Keras' warning about it is noise.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return keras.saving.load_model(path, compile=False)


def load_tokenizer(folder: Path):
    """Loads a tokenizer written by `tokenizer.save_to_preset(folder)`."""
    config = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = keras.saving.deserialize_keras_object(config)
    tokenizer.load_preset_assets(str(folder))
    return tokenizer


def save_data_sources(path: Path, data: DataConfig) -> None:
    """Writes `data.json`: the files each split is read from, resolved now (through
    `data.data_dir` or `TFSFT_DATA_DIR`), or the TFDS dataset, so that a later
    `load_run` reads the same data whatever the environment says then."""
    if data.use_files():
        root = data.resolved_data_dir()
        sources = {"source": "files", "data_dir": str(root.absolute()) if root else None,
                   "files": {split: str(data.file_path(split).absolute()) for split in data.files}}
    else:
        sources = {"source": "tfds", "tfds": data.tfds.name}
    (path / DATA_SOURCES).write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")


def _run_config(path: Path, data_dir, overrides) -> ExperimentConfig:
    """The run's config.yaml, its data as recorded in `data.json` (unless `data_dir` is given), then `overrides`."""
    raw = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    recorded = path / DATA_SOURCES
    if data_dir is not None:
        raw["data"]["data_dir"] = str(data_dir)
    elif recorded.exists():  # runs trained before data.json existed fall back to the environment
        sources = json.loads(recorded.read_text(encoding="utf-8"))
        if sources["source"] == "files":
            raw["data"].update(files=sources["files"], data_dir=sources["data_dir"])
        else:
            raw["data"]["files"] = {}
    return config_from_mapping(raw, list(overrides), source=str(path / "config.yaml"))


def load_run(path: str | Path, *, data_dir: str | Path | None = None, overrides=()) -> LoadedRun:
    """Loads a finished run: config, task state, model and tokenizer.

    The config reads the data the run was trained with (`data.json`); `data_dir`
    reads the config's files from another folder instead, and `overrides`
    (`key.path=value`) change the config last.
    """
    path = Path(path)
    for name in ("config.yaml", "task.json", "model.keras", "tokenizer"):
        if not (path / name).exists():
            raise RunDirError(f"{path}: no {name}; is this a finished run directory (`tfsft train` writes it)?")
    config = _run_config(path, data_dir, overrides)
    task = get_task(config)
    task.load_state(json.loads((path / "task.json").read_text(encoding="utf-8")))
    model = load_model(path / "model.keras")
    tokenizer = load_tokenizer(path / "tokenizer")
    return LoadedRun(config, task, model, tokenizer, path)


def save_preset(run_dir: Path, preset_dir: Path) -> Path:
    """Saves the trained backbone and tokenizer of a run as a KerasHub preset folder.

    `keras_hub.models.Backbone.from_preset(preset_dir)` and
    `keras_hub.models.Tokenizer.from_preset(preset_dir)` load it back.
    """
    model = load_model(run_dir / "model.keras")
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    preset_dir.mkdir(parents=True, exist_ok=True)
    model.backbone.save_to_preset(str(preset_dir))
    tokenizer.save_to_preset(str(preset_dir))
    return preset_dir
