"""`TrainableWeights`: what of a model trains in a run, as `tfsft.training.train` sets it up.

All of it (the default), a backbone partly or wholly frozen (`train.freeze`),
or LoRA adapters and the task head (`model.lora`). It logs the trainable and
total parameter counts, gives the callbacks a LoRA run needs, and writes the
adapter file when the run ends.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

from tfsft.config import ConfigError, ExperimentConfig
from tfsft.peft.adapter import ADAPTER_FILE, save_adapter
from tfsft.peft.checkpoints import BEST_ADAPTER, AdapterCheckpoints
from tfsft.peft.freeze import freeze
from tfsft.peft.lora import enable_lora


def parameter_count(variables) -> int:
    """Σ over distinct variables of their number of elements."""
    unique = {id(v): v for v in variables}.values()
    return sum(math.prod(v.shape) for v in unique)


class TrainableWeights:
    """Freezes / adds LoRA to `model` (built on `backbone`) as `config` says, and logs the parameter counts.

    Args:
        model: the task model, before `compile`.
        backbone: its backbone.
        config: the experiment (`model.lora`, `train.freeze`).
        log: where the counts go.

    Raises:
        ConfigError: nothing would train, or a LoRA target matches no layer.
    """

    def __init__(self, model, backbone, config: ExperimentConfig, log: Callable[[str], None] = print):
        self.model, self.backbone, self.lora_config = model, backbone, config.model.lora
        self.lora = enable_lora(backbone, self.lora_config) if self.lora_config else []
        frozen = freeze(backbone, config.train.freeze) if config.train.freeze else []
        trainable, total = parameter_count(model.trainable_variables), parameter_count(model.weights)
        if trainable == 0:
            raise ConfigError("the config", [("train.freeze", f"freezes every weight of {type(model).__name__}; "
                                                              "nothing is left to train")])
        how = (f"; LoRA rank {self.lora_config.rank}, alpha {self.lora_config.alpha:g} on "
               f"{', '.join(self.lora_config.targets)} ({len(self.lora)} layers)" if self.lora else
               f"; frozen: {', '.join(layer.name for layer in frozen)}" if frozen else "")
        log(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f} %){how}")

    def callbacks(self, run: Path, best_weights) -> list:
        """The callbacks of a LoRA run (none otherwise); they go between `BestWeights` and `BackupAndRestore`."""
        if not self.lora:
            return []
        return [AdapterCheckpoints(self.backbone, self.lora_config, self.lora, run / "backup", run / "checkpoints",
                                   best_weights)]

    def finish(self, run: Path) -> Path | None:
        """Writes `<run>/adapter.safetensors` (LoRA runs): the best interval's adapter, else the last one."""
        if not self.lora:
            return None
        best = run / "checkpoints" / BEST_ADAPTER
        if best.exists():
            shutil.copyfile(best, run / ADAPTER_FILE)
        else:
            save_adapter(self.model, self.backbone, self.lora_config, run / ADAPTER_FILE)
        return run / ADAPTER_FILE
