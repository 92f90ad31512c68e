"""What `tfsft export` writes for TF Serving: warm-up requests, batching parameters, versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.serving.protos import BatchingParameters, parse
from tfsft.config import ConfigError
from tfsft.experiment import config_from_mapping
from tfsft.export import export, next_version, predict
from tfsft.serving.assets import BATCH_SIZES, BATCHING_FILE, WARMUP_FILE, write_batching_parameters

REPLAY = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # the TF Text ops TF Serving links
from tensorflow_serving.apis import prediction_log_pb2
assert "tfsft" not in sys.modules and "keras_hub" not in sys.modules
saved_model = sys.argv[1]
signatures = tf.saved_model.load(saved_model).signatures
replies = []
for record in tf.data.TFRecordDataset(f"{saved_model}/assets.extra/tf_serving_warmup_requests"):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    outputs = signatures[request.model_spec.signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
    plain = lambda a: [s.decode() for s in a.ravel()] if a.dtype == object else a.tolist()
    replies.append({"model": request.model_spec.name, "signature": request.model_spec.signature_name,
                    "inputs": {k: plain(v) for k, v in inputs.items()},
                    "outputs": {k: plain(v.numpy()) for k, v in outputs.items()}})
print(json.dumps(replies))
"""


def test_warmup_requests_replay_in_a_fresh_process_as_tfsft_predict(exports):
    saved = exports.root / "sst2" / "1"
    assert (saved / WARMUP_FILE).exists()
    result = subprocess.run([sys.executable, "-c", REPLAY, str(saved)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    replies = json.loads(result.stdout.splitlines()[-1])
    assert [len(r["inputs"]["text"]) for r in replies] == list(BATCH_SIZES)
    assert {(r["model"], r["signature"]) for r in replies} == {("sst2", "serving_default")}
    samples = replies[-1]["inputs"]["text"]
    assert "" in samples and any(len(t) > 1000 for t in samples)  # the task's sample inputs, cycled
    for reply in replies:
        rows = list(predict(saved, reply["inputs"]["text"]))
        assert reply["outputs"]["label"] == [r["label"] for r in rows]
        assert reply["outputs"]["label_id"] == [r["label_id"] for r in rows]
        np.testing.assert_allclose(reply["outputs"]["probabilities"], [r["probabilities"] for r in rows], atol=1e-6)


def test_batching_parameters_parse_and_allow_the_warmup_batch_sizes(exports):
    params = parse((exports.root / "sst2" / "1" / BATCHING_FILE).read_text(), BatchingParameters)
    assert list(params.allowed_batch_sizes) == list(BATCH_SIZES)
    assert params.max_batch_size.value == params.allowed_batch_sizes[-1]  # TF Serving checks this at load
    assert params.pad_variable_length_inputs and params.batch_timeout_micros.value > 0


def test_a_model_with_a_scalar_input_is_not_batched(exports):
    chat = exports.root / "chat" / "1"  # `generate` takes scalar knobs, which TF Serving cannot batch
    assert write_batching_parameters(chat) == "input generate/max_new_tokens is a scalar, which TF Serving cannot batch"
    assert not (chat / BATCHING_FILE).exists()
    assert write_batching_parameters(exports.root / "ner" / "1") is None  # serve_tokens: (B, W) words, padded


def test_exports_take_the_next_free_version_and_a_chosen_one_replaces(exports):
    first, second = exports.logs
    assert first.startswith(f"Exported SavedModel to {exports.root / 'sst2' / '1'};") and "TF Serving >= 2.20" in first
    assert second.startswith(f"Exported SavedModel to {exports.root / 'sst2' / '2'};")
    v1 = (exports.root / "sst2" / "1" / "saved_model.pb").read_bytes()
    logs = []
    assert export(exports.runs[1], verify=False, version=2, log=logs.append) == exports.root / "sst2" / "2"
    assert "(replaced)" in logs[0] and (exports.root / "sst2" / "1" / "saved_model.pb").read_bytes() == v1
    assert sorted(p.name for p in (exports.root / "sst2").iterdir()) == ["1", "2"]  # nothing staged is left
    with pytest.raises(ValueError, match="version must be a positive integer"):
        export(exports.runs[1], version=0)


def test_next_version_skips_staging_folders_and_files(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    for name in ("1", "3", ".4.partial"):
        (tmp_path / name).mkdir()
    (tmp_path / "models.config").write_text("")
    assert next_version(tmp_path) == 4


def test_config_version_is_optional_and_positive():
    mapping = {"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}}}
    assert config_from_mapping(mapping).export.version is None
    with pytest.raises(ConfigError, match="export.version: must be a positive integer"):
        config_from_mapping({**mapping, "export": {"version": 0}})
