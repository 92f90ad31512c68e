"""A stand-in for TF Serving's model server, for tests only (not a product: deploy with serving/).

TF Serving's `tensorflow_model_server` cannot be installed on the test machines,
so this serves the real SavedModels of a `models.config` through what clients
see of it:

- gRPC: TF Serving's own service definition (`PredictionServiceServicer` and
  `add_PredictionServiceServicer_to_server` from tensorflow-serving-api):
  `Predict` and `GetModelMetadata` (signature_def);
- REST: the JSON layout of TF Serving's g3doc/api_rest.md:
  `POST /v1/models/NAME[/versions/N|/labels/L]:predict` in the row
  (`instances` → `predictions`) and columnar (`inputs` → `outputs`) formats,
  and `GET .../metadata`; errors as `{"error": ...}`.

Versions and labels come from the config's `specific` version policy and
`version_labels`, as TF Serving resolves them (no version: the newest loaded).
It binds 127.0.0.1 on free ports and stops itself after `lifetime` seconds.
"""

from __future__ import annotations

import json
import math
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the TF Text ops TF Serving links)
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

REST_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>\w+))?"
                       r"(?P<verb>:predict|/metadata)")


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, http_status: int, message: str):
        super().__init__(message)
        self.code, self.http_status = code, http_status


class Servable:
    """One loaded version: its signature functions and its SignatureDefMap."""

    def __init__(self, path: Path):
        self.functions = tf.saved_model.load(str(path)).signatures
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in proto.meta_graphs[0].signature_def.items():
            self.signature_defs.signature_def[name].CopyFrom(signature)

    def run(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        if signature not in self.functions:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, 400,
                               f"Serving signature key \"{signature}\" not found.")
        spec = self.signature_defs.signature_def[signature].inputs
        if set(inputs) != set(spec):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 400,
                               f"inputs {sorted(inputs)} do not match the signature's {sorted(spec)}")
        try:
            tensors = {k: tf.constant(v, dtype=tf.as_dtype(spec[k].dtype)) for k, v in inputs.items()}
            return {k: v.numpy() for k, v in self.functions[signature](**tensors).items()}
        except (TypeError, ValueError, tf.errors.OpError) as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 400, str(e)) from None


class ModelServer:
    """Serves a models.config on 127.0.0.1; `grpc_address` ("127.0.0.1:PORT") and `rest_address` ("http://...")."""

    def __init__(self, models_config: Path, lifetime: float = 600.0):
        config = text_format.Parse(Path(models_config).read_text(encoding="utf-8"),
                                   model_server_config_pb2.ModelServerConfig())
        self.models: dict[str, dict[int, Servable]] = {}
        self.labels: dict[str, dict[str, int]] = {}
        for model in config.model_config_list.config:
            base = Path(model.base_path)
            versions = list(model.model_version_policy.specific.versions) or [
                max(int(p.name) for p in base.iterdir() if p.name.isdigit())]
            self.models[model.name] = {v: Servable(base / str(v)) for v in versions}
            self.labels[model.name] = dict(model.version_labels)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), self._grpc)
        self.grpc_address = f"127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self))
        self.rest_address = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._stopped = threading.Event()

    def start(self) -> ModelServer:
        self._grpc.start()
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            self._timer.cancel()
            self._grpc.stop(grace=None)
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[int, Servable]:
        if name not in self.models:
            raise RequestError(grpc.StatusCode.NOT_FOUND, 404, f"Servable not found for request: Latest({name})")
        if label:
            if label not in self.labels[name]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 404,
                                   f"Unrecognized servable version label: {label}")
            version = self.labels[name][label]
        version = max(self.models[name]) if version is None else version
        if version not in self.models[name]:
            raise RequestError(grpc.StatusCode.NOT_FOUND, 404,
                               f"Servable not found for request: Specific({name}, {version})")
        return version, self.models[name][version]


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self.server = server

    def _resolve(self, spec, context):
        version = spec.version.value if spec.HasField("version") else None
        try:
            return self.server.resolve(spec.name, version, spec.version_label or None)
        except RequestError as e:
            context.abort(e.code, str(e))

    def Predict(self, request, context):
        version, servable = self._resolve(request.model_spec, context)
        signature = request.model_spec.signature_name or "serving_default"
        try:
            outputs = servable.run(signature, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        except RequestError as e:
            context.abort(e.code, str(e))
        response = predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = request.model_spec.name, signature
        response.model_spec.version.value = version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        version, servable = self._resolve(request.model_spec, context)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response


def _rest_handler(server: ModelServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            match = REST_PATH.fullmatch(self.path)
            try:
                if not match or (method == "GET") != (match["verb"] == "/metadata"):
                    raise RequestError(grpc.StatusCode.NOT_FOUND, 404, f"Malformed request: {method} {self.path}")
                version, servable = server.resolve(match["name"], match["version"] and int(match["version"]),
                                                   match["label"])
                spec = {"name": match["name"], "signature_name": "", "version": str(version)}
                if method == "GET":
                    self._answer(200, {"model_spec": spec, "metadata": {
                        "signature_def": json_format.MessageToDict(servable.signature_defs)}})
                else:
                    self._answer(200, _rest_predict(servable, json.loads(self.rfile.read(
                        int(self.headers["Content-Length"])))))
            except RequestError as e:
                self._answer(e.http_status, {"error": str(e)})

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

    return Handler


def _rest_predict(servable: Servable, body: dict) -> dict:
    """The row and columnar formats of g3doc/api_rest.md, both ways."""
    signature = body.get("signature_name") or "serving_default"
    if signature not in servable.signature_defs.signature_def:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, 400,
                           f"Serving signature name: \"{signature}\" not found in signature def")
    names = list(servable.signature_defs.signature_def[signature].inputs)
    if ("instances" in body) == ("inputs" in body):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 400, "Missing 'inputs' or 'instances' key")
    if "instances" in body:
        rows = body["instances"]
        if all(isinstance(row, dict) for row in rows):
            inputs = {k: [row[k] for row in rows] for k in rows[0]} if rows else {}
        elif len(names) == 1:
            inputs = {names[0]: rows}
        else:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 400, "instances must be objects: several inputs")
    else:
        value = body["inputs"]
        inputs = value if isinstance(value, dict) else {names[0]: value}
    outputs = {k: _json_value(v) for k, v in servable.run(signature, inputs).items()}
    if "instances" in body:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        size = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(size)]}
    return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}


def _json_value(value: np.ndarray):
    """As TF Serving's util/json_tensor.cc writes it: strings as UTF-8, floats as
    "%.*g" with max_digits10 digits (so a float 1.0 is the JSON number 1)."""
    digits = {np.dtype(np.float32): 9, np.dtype(np.float64): 17}.get(value.dtype)

    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, bytes):
            return v.decode("utf-8")
        return json.loads("%.*g" % (digits, v)) if digits and math.isfinite(v) else v

    return plain(value.tolist())
