"""An experiment: a YAML file validated against the table of built-in tasks.

`tfsft.config` knows the sections of a config but no task; this module hands it
the task table of `tfsft.tasks`, so the import graph stays one-way
(config ← tasks ← experiment)::

    >>> from tfsft.experiment import load_config
    >>> config = load_config("configs/sst2_minilm.yaml", overrides=["train.epochs=0.5"])
"""

from __future__ import annotations

import os

from tfsft import config as config_lib
from tfsft.config import ExperimentConfig
from tfsft.tasks import TASKS


def task_options() -> dict[str, type]:
    """Task name → its options dataclass, for every built-in task."""
    return {name: task.options_class for name, task in TASKS.items()}


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> ExperimentConfig:
    """Loads, overrides and validates an experiment YAML file (every problem at once).

    Raises:
        tfsft.config.ConfigError: listing every problem with its dotted path.
    """
    return config_lib.load_config(path, overrides, task_options=task_options())


def config_from_mapping(raw: dict, overrides=(), source: str = "config") -> ExperimentConfig:
    """Validates a mapping (as read from YAML) into an `ExperimentConfig`."""
    return config_lib.config_from_mapping(raw, overrides, source, task_options=task_options())
