"""Keeping LoRA's A and B through a killed-and-resumed run and through the best checkpoint.

Keras writes a LoRA layer's weights merged (W + (alpha/r)·A·B) and zeroes A
and B when it loads them. `BackupAndRestore` alone would therefore resume a
LoRA run with the merged kernel and A = B = 0, where neither factor gets a
gradient (∂L/∂A ∝ B, ∂L/∂B ∝ A): the run would go on without learning. So,
at the end of every interval, `AdapterCheckpoints` writes the adapter to
`backup/adapter-<interval>.safetensors` (before Keras' backup, keeping the
last two, so one always matches `training_metadata.json`) and, when
`BestWeights` has just saved, to `checkpoints/best.adapter.safetensors`.
When a run resumes it keeps the frozen base kernels as loaded, and at the
first interval, after Keras has restored the weights and optimizer state,
puts the base kernels, A, B and the head back as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from tfsft.peft.adapter import load_adapter, save_adapter
from tfsft.peft.lora import base_kernel

BEST_ADAPTER = "best.adapter.safetensors"


class AdapterCheckpoints(keras.callbacks.Callback):
    """Saves and restores the adapter of a LoRA run; goes after `BestWeights` and before `BackupAndRestore`.

    Args:
        backbone: the model's backbone (LoRA enabled).
        lora_config: its `LoraConfig`.
        lora: (path, layer) of the LoRA layers.
        backup_dir: `BackupAndRestore`'s folder.
        best_dir: where the best adapter goes.
        best_weights: the run's `BestWeights` callback; its `best` changes when it saves.
    """

    def __init__(self, backbone, lora_config, lora, backup_dir: Path, best_dir: Path, best_weights):
        super().__init__()
        self.backbone, self.lora_config, self.backup_dir, self.best_dir = backbone, lora_config, backup_dir, best_dir
        self.best_weights = best_weights
        self.kernels = [base_kernel(layer) for _, layer in lora]
        resuming = (backup_dir / "training_metadata.json").exists()
        self.base = [np.array(k.numpy()) for k in self.kernels] if resuming else None  # W, before the backup loads
        self.last_best = best_weights.best

    def adapter_path(self, interval: int) -> Path:
        return self.backup_dir / f"adapter-{interval}.safetensors"

    def on_epoch_begin(self, epoch, logs=None):
        if self.base is None:
            return
        path = self.adapter_path(epoch)
        if not path.exists():
            meta = json.loads((self.backup_dir / "training_metadata.json").read_text())
            raise RuntimeError(f"{self.backup_dir}: resuming a LoRA run at interval {meta['epoch']} needs {path.name}, "
                               f"which is missing; delete {self.backup_dir} to start the run over")
        for kernel, value in zip(self.kernels, self.base):
            kernel.assign(value)  # Keras loaded W + (alpha/r)·A·B here
        load_adapter(self.model, self.backbone, path)
        self.base = None

    def on_epoch_end(self, epoch, logs=None):
        if self.best_weights.best != self.last_best:  # BestWeights saved this interval
            self.last_best = self.best_weights.best
            self.best_dir.mkdir(parents=True, exist_ok=True)
            save_adapter(self.model, self.backbone, self.lora_config, self.best_dir / BEST_ADAPTER)
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(self.model, self.backbone, self.lora_config, self.adapter_path(epoch + 1))
        for old in self.backup_dir.glob("adapter-*.safetensors"):
            if old.stem.split("-")[-1].isdigit() and int(old.stem.split("-")[-1]) < epoch:
                old.unlink()
