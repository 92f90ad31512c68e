"""What an export writes beside its SavedModel for TF Serving.

- `assets.extra/tf_serving_warmup_requests`: a TFRecord of `PredictionLog`s,
  one `serving_default` request per size of `BATCH_SIZES`, its rows cycled
  from the task's sample inputs. TF Serving replays them when it loads the
  version, before it serves it, so the first real request does not pay for
  lazy initialization (TF Serving's g3doc/saved_model_warmup.md).
- `batching_params.pbtxt`: the model's `BatchingParameters` (text proto),
  read by a model server started with `--enable_batching
  --enable_per_model_batching_parameters` (serving/docker-compose.yml):
  concurrent requests are merged into batches of up to `BATCH_SIZES[-1]` rows,
  padded to the next size of `BATCH_SIZES`, the sizes the warm-up ran.
  TF Serving batches every signature of a model and cannot batch a scalar
  input, so a model with one (the `generate` knobs of a generation model) gets
  no file and is served unbatched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tfsft.serving.ops import saved_model_proto

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
BATCHING_FILE = "batching_params.pbtxt"
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BATCH_TIMEOUT_MICROS = 1000  # how long a batch waits for more requests (TF Serving suggests 0-10 ms on CPU)
MAX_ENQUEUED_BATCHES = 64  # queue length in batches before requests are refused (UNAVAILABLE)


def warmup_requests(sample_inputs: dict[str, list[str]], model_name: str) -> list[prediction_log_pb2.PredictionLog]:
    """One `serving_default` PredictionLog per batch size, rows cycled from `sample_inputs`."""
    logs = []
    for size in BATCH_SIZES:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        for key, values in sample_inputs.items():
            rows = [values[i % len(values)] for i in range(size)]
            request.inputs[key].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_requests(saved_model: Path, sample_inputs: dict[str, list[str]], model_name: str) -> Path:
    """Writes `<saved_model>/assets.extra/tf_serving_warmup_requests`; returns its path."""
    path = saved_model / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in warmup_requests(sample_inputs, model_name):
            writer.write(log.SerializeToString())
    return path


def batching_parameters() -> str:
    """The `BatchingParameters` text proto of every batched export."""
    return (
        f"max_batch_size {{ value: {BATCH_SIZES[-1]} }}\n"
        f"batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n"
        f"max_enqueued_batches {{ value: {MAX_ENQUEUED_BATCHES} }}\n"
        + "".join(f"allowed_batch_sizes: {size}\n" for size in BATCH_SIZES)
        # NER's `serve_tokens` takes (B, W) words: pad W to the longest request of a batch
        + "pad_variable_length_inputs: true\n"
    )


def scalar_input(saved_model: Path) -> Optional[str]:
    """The first signature input without a batch dimension, as "signature/input", or None."""
    for name, signature in sorted(saved_model_proto(saved_model).meta_graphs[0].signature_def.items()):
        for key, tensor in sorted(signature.inputs.items()):
            if not tensor.tensor_shape.unknown_rank and not tensor.tensor_shape.dim:
                return f"{name}/{key}"
    return None


def write_batching_parameters(saved_model: Path) -> Optional[str]:
    """Writes `<saved_model>/batching_params.pbtxt` unless a signature has a scalar input.

    Returns None, or why the model is not batched.
    """
    scalar = scalar_input(saved_model)
    if scalar is not None:
        return f"input {scalar} is a scalar, which TF Serving cannot batch"
    (saved_model / BATCHING_FILE).write_text(batching_parameters(), encoding="utf-8")
    return None
