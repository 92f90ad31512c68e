"""`models.config` for TF Serving: every model of an export root, its versions and labels.

TF Serving reads a `ModelServerConfig` text proto (`--model_config_file`) with
one `config` per model: name, base path as the server sees it (`/models/<name>`
in serving/docker-compose.yml), version policy and version labels.

Per model, the labels are those given (`{"sst2": {"stable": 3}}`) or by
default: `stable` for the only version; with several, `stable` for the one
before the newest and `canary` for the newest. The version policy is
`specific` with exactly the labelled versions, so older ones are not loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

LABEL = re.compile(r"[A-Za-z0-9_]+")  # TF Serving's rule for version labels
LABEL_SPEC = re.compile(r"(?P<model>[^:=]+):(?P<label>[^:=]+)=(?P<version>[0-9]+)")


class ServingConfigError(ValueError):
    """The export root or a label does not make a valid models.config."""


def exported_models(export_root: str | Path) -> dict[str, list[int]]:
    """Model name → its exported versions (ascending): every `<name>/<version>/saved_model.pb`."""
    root = Path(export_root)
    models: dict[str, list[int]] = {}
    for pb in root.glob("*/*/saved_model.pb"):
        version = pb.parent.name
        if version.isdigit():
            models.setdefault(pb.parent.parent.name, []).append(int(version))
    if not models:
        raise ServingConfigError(f"{root}: no exported model (<name>/<version>/saved_model.pb); "
                                 "run `tfsft export RUN_DIR` with export.export_dir set to it")
    return {name: sorted(versions) for name, versions in sorted(models.items())}


def parse_labels(specs: list[str]) -> dict[str, dict[str, int]]:
    """`["sst2:stable=3", ...]` → `{"sst2": {"stable": 3}}`."""
    labels: dict[str, dict[str, int]] = {}
    for spec in specs:
        match = LABEL_SPEC.fullmatch(spec)
        if not match:
            raise ServingConfigError(f"label {spec!r}: expected MODEL:LABEL=VERSION, e.g. sst2:stable=3")
        labels.setdefault(match["model"], {})[match["label"]] = int(match["version"])
    return labels


def default_labels(versions: list[int]) -> dict[str, int]:
    if len(versions) == 1:
        return {"stable": versions[0]}
    return {"stable": versions[-2], "canary": versions[-1]}


def models_config(export_root: str | Path, labels: Optional[dict[str, dict[str, int]]] = None,
                  base_path: str = "/models") -> model_server_config_pb2.ModelServerConfig:
    """The `ModelServerConfig` of every model in `export_root` (see the module doc).

    Raises:
        ServingConfigError: no model, or a label for a model or version that is not exported
            or with a name TF Serving rejects.
    """
    models = exported_models(export_root)
    labels = labels or {}
    for name in labels:
        if name not in models:
            raise ServingConfigError(f"label for model {name!r}: not in {export_root} (has {', '.join(models)})")
    config = model_server_config_pb2.ModelServerConfig()
    for name, versions in models.items():
        chosen = labels.get(name) or default_labels(versions)
        for label, version in chosen.items():
            if not LABEL.fullmatch(label):
                raise ServingConfigError(f"label {label!r} of model {name!r}: TF Serving allows only [A-Za-z0-9_]+")
            if version not in versions:
                raise ServingConfigError(f"label {name}:{label}={version}: {Path(export_root) / name} has versions "
                                         f"{', '.join(map(str, versions))}")
        model = config.model_config_list.config.add(
            name=name, base_path=f"{base_path.rstrip('/')}/{name}", model_platform="tensorflow")
        model.model_version_policy.specific.versions.extend(sorted(set(chosen.values())))
        for label, version in chosen.items():
            model.version_labels[label] = version
    return config


def write_models_config(export_root: str | Path, output: Optional[str | Path] = None,
                        labels: Optional[dict[str, dict[str, int]]] = None, base_path: str = "/models") -> Path:
    """Writes the `models.config` of `export_root` (default `<export_root>/models.config`); returns its path."""
    config = models_config(export_root, labels, base_path)
    path = Path(output) if output else Path(export_root) / "models.config"
    text = "# ModelServerConfig written by `tfsft serving-config`; TF Serving: --model_config_file\n"
    path.write_text(text + text_format.MessageToString(config), encoding="utf-8")
    return path
