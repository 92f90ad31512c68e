"""A TF Serving client for every task: the rows of `tfsft predict`, from a model server.

    from tfsft.serving.client import Client
    Client("localhost:8500").predict("sst2", ["a gripping film"])         # gRPC
    Client("http://localhost:8501").predict("sst2", ["a gripping film"])  # REST, "instances" rows
    Client("http://localhost:8501", rest_format="inputs")                 # REST, "inputs" columns

gRPC goes through tensorflow-serving-api's `PredictionServiceStub`, REST
through the JSON of TF Serving's g3doc/api_rest.md. Output dtypes come from
the model's signature metadata (REST JSON has only numbers and strings), so
both give exactly the arrays of the SavedModel, and `predict` turns them into
rows with `tfsft.export.prediction_rows`, the code of `tfsft predict`.
Requests carry at most `BATCH_SIZES[-1]` rows, the largest batch a batched
export accepts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from tfsft.export import prediction_rows
from tfsft.serving.assets import BATCH_SIZES

GENERATION_OUTPUTS = ("completion", "num_tokens", "finish_reason", "prompt_truncated")


class ServingError(RuntimeError):
    """The model server refused a request or could not be reached."""


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, tf.DType]
    outputs: dict[str, tf.DType]


class Client:
    """Requests to one TF Serving model server.

    Args:
        address: "HOST:PORT" for gRPC (port 8500), "http://HOST:PORT" for REST (8501).
        timeout: seconds per request.
        rest_format: "instances" (rows) or "inputs" (columns); a request with a
            scalar input is always sent as columns, which rows cannot carry.
    """

    def __init__(self, address: str, timeout: float = 30.0, rest_format: str = "instances"):
        if rest_format not in ("instances", "inputs"):
            raise ValueError(f"rest_format must be 'instances' or 'inputs'. Received: {rest_format!r}")
        self.address = address.rstrip("/")
        self.rest = self.address.startswith(("http://", "https://"))
        self.timeout = timeout
        self.rest_format = rest_format
        self._signatures: dict[tuple, Signature] = {}
        if not self.rest:
            self._channel = grpc.insecure_channel(self.address, options=[("grpc.max_receive_message_length", -1)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        if not self.rest:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the rows of tfsft predict / tfsft generate --------------------------
    def predict(self, model: str, texts: Sequence[str], pairs: Optional[Sequence[str]] = None, *,
                version: Optional[int] = None, label: Optional[str] = None) -> list[dict]:
        """The rows `tfsft predict` gives for these texts, from the served model.

        A generation model (its `serving_default` takes `prompt`) gives the rows of `generate`.
        """
        where = {"version": version, "label": label}
        if "prompt" in self.signature(model, **where).inputs:
            return self.generate(model, texts, **where)

        def serving_default(**inputs):
            arrays = {key: value.numpy() for key, value in inputs.items()}
            return {key: tf.constant(value) for key, value in self.call(model, arrays, **where).items()}

        return list(prediction_rows(serving_default, list(texts), None if pairs is None else list(pairs),
                                    batch_size=BATCH_SIZES[-1]))

    def generate(self, model: str, prompts: Sequence[str], *, max_new_tokens: Optional[int] = None,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 version: Optional[int] = None, label: Optional[str] = None) -> list[dict]:
        """Rows {prompt, completion, num_tokens, finish_reason, prompt_truncated}, as `tfsft generate --prompt`.

        Without `max_new_tokens`: `serving_default` (greedy, the export's budget);
        with it: the `generate` signature with these sampling knobs.
        """
        knobs = {} if max_new_tokens is None else {
            "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
        rows = []
        for start in range(0, len(prompts), BATCH_SIZES[-1]):
            batch = list(prompts[start:start + BATCH_SIZES[-1]])
            out = self.call(model, {"prompt": batch, **knobs}, signature="generate" if knobs else "serving_default",
                            version=version, label=label)
            rows += [{"prompt": p, **{k: _item(out[k][i]) for k in GENERATION_OUTPUTS}} for i, p in enumerate(batch)]
        return rows

    # --- one request ----------------------------------------------------------
    def call(self, model: str, inputs: dict, *, signature: str = "serving_default", version: Optional[int] = None,
             label: Optional[str] = None) -> dict[str, np.ndarray]:
        """One Predict request: named inputs (cast to the signature's dtypes) → named outputs."""
        spec = self.signature(model, signature, version=version, label=label)
        if set(inputs) != set(spec.inputs):
            raise ServingError(f"model {model!r} signature {signature!r} takes inputs {sorted(spec.inputs)}; "
                               f"received {sorted(inputs)}")
        if self.rest:
            return self._rest_predict(model, signature, version, label, spec, inputs)
        request = predict_pb2.PredictRequest()
        _model_spec(request.model_spec, model, signature, version, label)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=spec.inputs[key]))
        response = self._grpc("Predict", request, model)
        return {key: tf.make_ndarray(response.outputs[key]) for key in spec.outputs}

    def signature(self, model: str, name: str = "serving_default", *, version: Optional[int] = None,
                  label: Optional[str] = None) -> Signature:
        """Input and output dtypes of a served signature (from the model metadata; cached)."""
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        key = (model, name, version, label)
        if key not in self._signatures:
            signatures = get_model_metadata_pb2.SignatureDefMap()
            if self.rest:
                body = self._http("GET", _model_path(model, version, label) + "/metadata")
                json_format.ParseDict(body["metadata"]["signature_def"], signatures, ignore_unknown_fields=True)
            else:
                request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                _model_spec(request.model_spec, model, None, version, label)
                self._grpc("GetModelMetadata", request, model).metadata["signature_def"].Unpack(signatures)
            if name not in signatures.signature_def:
                raise ServingError(f"model {model!r} has no signature {name!r}; it has "
                                   f"{', '.join(sorted(signatures.signature_def))}")
            signature = signatures.signature_def[name]
            self._signatures[key] = Signature(
                inputs={k: tf.as_dtype(v.dtype) for k, v in signature.inputs.items()},
                outputs={k: tf.as_dtype(v.dtype) for k, v in signature.outputs.items()})
        return self._signatures[key]

    # --- transports -------------------------------------------------------------
    def _grpc(self, method: str, request, model: str):
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(f"{self.address} {method} {model!r}: {e.code().name}: {e.details()}") from None

    def _http(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        url = self.address + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise ServingError(f"{method} {url}: HTTP {e.code}: {_error_text(e.read())}") from None
        except urllib.error.URLError as e:
            raise ServingError(f"{method} {url}: cannot connect: {e.reason}") from None

    def _rest_predict(self, model, signature, version, label, spec: Signature, inputs: dict) -> dict[str, np.ndarray]:
        columns = {key: _json_value(value) for key, value in inputs.items()}
        as_rows = self.rest_format == "instances" and all(isinstance(v, list) for v in columns.values())
        body = {"signature_name": signature}
        if as_rows:
            size = len(next(iter(columns.values())))
            body["instances"] = [{key: value[i] for key, value in columns.items()} for i in range(size)]
        else:
            body["inputs"] = columns
        answer = self._http("POST", _model_path(model, version, label) + ":predict", body)
        names = list(spec.outputs)
        if as_rows:  # one object per row, or bare values when the signature has one output
            predictions = answer["predictions"]
            outputs = {names[0]: predictions} if len(names) == 1 else {k: [p[k] for p in predictions] for k in names}
        else:
            outputs = {names[0]: answer["outputs"]} if len(names) == 1 else answer["outputs"]
        return {key: tf.constant(outputs[key], dtype=spec.outputs[key]).numpy() for key in names}


def _model_spec(spec, model: str, signature: Optional[str], version: Optional[int], label: Optional[str]) -> None:
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label


def _model_path(model: str, version: Optional[int], label: Optional[str]) -> str:
    if version is not None:
        return f"/v1/models/{model}/versions/{version}"
    return f"/v1/models/{model}" + (f"/labels/{label}" if label is not None else "")


def _json_value(value):
    """An input as JSON: nested lists (or a scalar), bytes decoded."""
    return _decoded(np.asarray(value).tolist())


def _decoded(value):
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _item(value):
    """A NumPy element as a plain Python value (bytes decoded)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value.item()


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500]
