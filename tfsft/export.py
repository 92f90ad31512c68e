"""SavedModels for TF Serving: raw strings in, answers out.

The exported `serving_default` signature holds the tokenizer (TF Text ops),
the model and the decoding (argmax → label names), so a client sends strings:

    curl -d '{"instances": [{"text": "a gripping film"}]}' \
        localhost:8501/v1/models/sst2:predict

Layout: `<export_dir>/<model_name>/<version>/saved_model.pb` (TF Serving's);
each export takes the next free version unless one is chosen, since TF
Serving may be serving the last one. Beside the SavedModel go warm-up
requests and batching parameters (`tfsft.serving.assets`), and a graph with
an op TF Serving lacks fails the export (`tfsft.serving.ops`). The export
is written to a temporary folder and renamed into place, so a failed export
never leaves a half-written version behind. `verify_export`
reloads it in a fresh process that imports only TensorFlow and TF Text (what
TF Serving has) and compares its outputs with the Keras model's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfsft.models import fast_matmul, precision
from tfsft.run_dir import LoadedRun, load_run
from tfsft.serving.assets import write_batching_parameters, write_warmup_requests
from tfsft.serving.ops import MIN_TF_SERVING, check_serving_ops


class ExportError(RuntimeError):
    """Export failed or the reloaded SavedModel disagrees with the model."""


def export_path(loaded: LoadedRun, version: Optional[int] = None) -> Path:
    """`<root>/<model_name>/<version>`: `version`, else `export.version`, else the next free one."""
    export = loaded.config.export
    root = Path(export.export_dir) if export.export_dir else loaded.path / "export"
    model_dir = root / export.model_name
    return model_dir / str(version or export.version or next_version(model_dir))


def next_version(model_dir: Path) -> int:
    """One more than the highest version folder in `model_dir` (1 when there is none)."""
    return max((int(p.name) for p in model_dir.glob("*") if p.name.isdigit()), default=0) + 1


def served_model(model, export_config):
    """The model at the export's weight precision: `export.dtype` (rebuilt), then `export.quantize` (int8)."""
    if export_config.dtype:
        model = precision.with_dtype(model, export_config.dtype)
    if export_config.quantize:
        model = precision.quantize(model, export_config.quantize)
    return model


@fast_matmul.fast_projections()
def export(run_dir: str | Path, verify: bool = True, log: Callable[[str], None] = print,
           version: Optional[int] = None, overrides=()) -> Path:
    """Exports a finished run as a SavedModel; returns the version folder.

    `version` (else the config's `export.version`) replaces that version;
    by default the export takes the next free number. `overrides`
    (`export.quantize=int8`, as for `tfsft train --set`) change the run's config.

    Example:
        >>> path = export("runs/sst2_minilm")   # runs/sst2_minilm/export/sst2/1, then .../2
    """
    if version is not None and version < 1:
        raise ValueError(f"version must be a positive integer. Received: {version}")
    loaded = load_run(run_dir, overrides=overrides)
    encoder = loaded.task.make_encoder(loaded.tokenizer, loaded.config.model.sequence_length)
    module = loaded.task.serving_module(served_model(loaded.model, loaded.config.export), encoder)
    signatures = {"serving_default": module.serve, **getattr(module, "extra_signatures", lambda: {})()}
    target = export_path(loaded, version)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        check_serving_ops(staging)
        write_warmup_requests(staging, loaded.task.sample_inputs(), loaded.config.export.model_name)
        unbatched = write_batching_parameters(staging)
        if verify:
            verify_export(staging, module, loaded.task.sample_inputs())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replaced = target.exists()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    weights = " + ".join(filter(None, (loaded.config.export.dtype, loaded.config.export.quantize)))
    log(f"Exported SavedModel to {target}" + (" (replaced)" if replaced else "")
        + (f"; weights {weights}" if weights else "") + f"; TF Serving >= {MIN_TF_SERVING}"
        + (f"; not batched: {unbatched}" if unbatched else ""))
    return target


_RELOAD_SCRIPT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the TF Text ops the tokenizer uses
assert "tfsft" not in sys.modules and "keras_hub" not in sys.modules
inputs = json.loads(sys.stdin.read())
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
print(json.dumps({k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy().ravel()]
                  for k, v in out.items()}))
"""


def run_in_fresh_process(saved_model: Path, inputs: dict[str, list[str]]) -> dict:
    """Calls `serving_default` in a new Python that imports only TF and TF Text."""
    result = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, str(saved_model)],
        input=json.dumps(inputs), capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        raise ExportError(f"reloading {saved_model} in a fresh process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def verify_export(saved_model: Path, module: tf.Module, inputs: dict[str, list[str]],
                  atol: float = 1e-3) -> dict:
    """Checks that the reloaded SavedModel matches the in-memory model.

    Raises:
        ExportError: when any numeric output differs by more than `atol` or
            any string output differs.
    """
    reloaded = run_in_fresh_process(saved_model, inputs)
    expected = module.serve(**{k: tf.constant(v) for k, v in inputs.items()})
    for key, value in expected.items():
        value = value.numpy()
        if value.dtype == object:
            want = [s.decode() for s in value.ravel()]
            if reloaded[key] != want:
                raise ExportError(f"output {key!r} differs after reload: {reloaded[key]} vs {want}")
        else:
            diff = float(np.max(np.abs(np.asarray(reloaded[key], dtype=np.float64) - value))) if value.size else 0.0
            if diff > atol:
                raise ExportError(f"output {key!r} differs after reload by {diff:.2e} (> {atol})")
    return reloaded


def find_saved_model(path: str | Path) -> Path:
    """A SavedModel folder from itself, an export root or a run directory.

    Picks the highest version when several exist.
    """
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    candidates = sorted(
        (p.parent for p in path.glob("**/saved_model.pb") if p.parent.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not candidates:
        raise ExportError(f"{path}: no SavedModel found; run `tfsft export {path}` first")
    return candidates[-1]


def predict(path: str | Path, texts: list[str], pairs: Optional[list[str]] = None, batch_size: int = 64):
    """Runs an exported SavedModel on strings; yields one dict per input: `text`, then the outputs by name."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    fn = tf.saved_model.load(str(find_saved_model(path))).signatures["serving_default"]
    yield from prediction_rows(fn, texts, pairs, batch_size)


def prediction_rows(fn: Callable, texts: list[str], pairs: Optional[list[str]] = None, batch_size: int = 64):
    """The rows of `predict` from `fn`: a `serving_default` signature, or a
    function like it (string tensors in, a dict of tensors out) that asks TF
    Serving (`tfsft.serving.client`)."""
    for start in range(0, len(texts), batch_size):
        args = {"text": tf.constant(texts[start:start + batch_size])}
        if pairs is not None:
            args["text_pair"] = tf.constant(pairs[start:start + batch_size])
        out = {k: v.numpy() for k, v in sorted(fn(**args).items())}  # a stable key order (signatures have none)
        for i in range(len(args["text"])):
            row = {"text": texts[start + i]}
            for key, value in out.items():
                item = value[i]
                row[key] = item.decode() if isinstance(item, bytes) else _plain(item.tolist())
            yield _trim_padded(row)


def predict_inputs(path: str | Path, inputs: dict[str, list[str]], batch_size: int = 64):
    """Runs an exported SavedModel on named string inputs, e.g. `{"question": [...], "context": [...]}`
    (question answering); yields one dict per row: its inputs, then the outputs."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    fn = tf.saved_model.load(str(find_saved_model(path))).signatures["serving_default"]
    count = len(next(iter(inputs.values())))
    for start in range(0, count, batch_size):
        batch = {name: values[start:start + batch_size] for name, values in inputs.items()}
        outputs = fn(**{name: tf.constant(v) for name, v in batch.items()})
        out = {k: v.numpy() for k, v in sorted(outputs.items())}  # a stable key order (signatures have none)
        for i in range(min(batch_size, count - start)):
            row = {name: values[i] for name, values in batch.items()}
            for key, value in out.items():
                item = value[i]
                row[key] = item.decode() if isinstance(item, bytes) else _plain(item.tolist())
            yield _trim_padded(row)


def predict_words(path: str | Path, sentences: list[list[str]], batch_size: int = 64):
    """Runs the `serve_tokens` signature of an exported token classifier on pre-split
    words; yields one dict per sentence: `words`, then the outputs by name."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    saved = find_saved_model(path)
    signatures = tf.saved_model.load(str(saved)).signatures
    if "serve_tokens" not in signatures:
        raise ExportError(f"{saved}: no serve_tokens signature (pre-split words are for token classification "
                          f"exports); it has {', '.join(signatures)}")
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start:start + batch_size]
        width = max(len(words) for words in batch)
        tokens = tf.constant([words + [""] * (width - len(words)) for words in batch], tf.string, [len(batch), width])
        lengths = tf.constant([len(words) for words in batch], tf.int32)
        out = {k: v.numpy() for k, v in sorted(signatures["serve_tokens"](tokens=tokens, lengths=lengths).items())}
        for i, words in enumerate(batch):
            row = {"words": words}
            for key, value in out.items():
                row[key] = _plain(value[i].tolist())
            yield _trim_padded(row)


def _plain(value):
    """Nested lists with bytes decoded to str (JSON-ready)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.decode() if isinstance(value, bytes) else value


def _trim_padded(row: dict) -> dict:
    """Cuts padded list outputs to their count: `<p>_count` = n keeps n items of each `<p>_*` list.

    Signatures cannot return ragged tensors, so e.g. NER returns `entity_count`
    with padded `entity_texts`, `entity_types`, ...
    """
    for key, count in list(row.items()):
        if key.endswith("_count") and isinstance(count, int):
            prefix = key[: -len("count")]
            for other, value in row.items():
                if other.startswith(prefix) and other != key and isinstance(value, list):
                    row[other] = value[:count]
    return row
