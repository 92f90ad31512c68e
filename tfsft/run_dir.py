"""The run directory: everything one experiment writes, and how to load it back.

Layout::

    <run_dir>/config.yaml            the resolved config
              task.json              task state (label vocabulary, ...)
              tokenizer/             the tokenizer (KerasHub preset format)
              model.keras            the trained task model (best weights; no optimizer state)
              checkpoints/best.weights.h5   the best weights so far, while training
              backup/                weights + optimizer state while training (resume; `train.keep_backup`)
              logs/                  TensorBoard events; history.csv
              metrics.json           evaluation metrics; confusion_matrix.png
              export/<name>/<ver>/   the SavedModel for TF Serving
              preset/                backbone + tokenizer as a KerasHub preset (`tfsft pretrain`)
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub  # noqa: F401  (registers the KerasHub classes for deserialization)

from tfsft.config import ExperimentConfig
from tfsft.experiment import load_config
from tfsft.tasks import get_task


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


def load_tokenizer(folder: Path):
    """Loads a tokenizer written by `tokenizer.save_to_preset(folder)`."""
    config = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = keras.saving.deserialize_keras_object(config)
    tokenizer.load_preset_assets(str(folder))
    return tokenizer


def load_run(path: str | Path) -> LoadedRun:
    """Loads a finished run: config, task state, model and tokenizer."""
    path = Path(path)
    for name in ("config.yaml", "task.json", "model.keras", "tokenizer"):
        if not (path / name).exists():
            raise RunDirError(f"{path}: no {name}; is this a finished run directory (`tfsft train` writes it)?")
    config = load_config(path / "config.yaml")
    task = get_task(config)
    task.load_state(json.loads((path / "task.json").read_text(encoding="utf-8")))
    model = keras.saving.load_model(path / "model.keras", compile=False)
    tokenizer = load_tokenizer(path / "tokenizer")
    return LoadedRun(config, task, model, tokenizer, path)


def save_preset(run_dir: Path, preset_dir: Path) -> Path:
    """Saves the trained backbone and tokenizer of a run as a KerasHub preset folder.

    `keras_hub.models.Backbone.from_preset(preset_dir)` and
    `keras_hub.models.Tokenizer.from_preset(preset_dir)` load it back.
    """
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    preset_dir.mkdir(parents=True, exist_ok=True)
    model.backbone.save_to_preset(str(preset_dir))
    tokenizer.save_to_preset(str(preset_dir))
    return preset_dir
