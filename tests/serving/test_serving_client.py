"""The TF Serving client over gRPC and REST (both formats) against the test model server:
the rows of `tfsft predict` for every output layout, versions and labels, errors, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfsft.cli import main
from tfsft.export import predict
from tfsft.serving.client import Client, ServingError

TEXTS = ["a gripping film", "dull", "", "x " * 300]


@pytest.fixture(scope="module")
def local(exports):
    """`tfsft predict` rows of a SavedModel under the export root, computed once per input."""
    cache = {}

    def rows(model: str, texts: list[str], pairs=None) -> list[dict]:
        key = (model, tuple(texts), pairs and tuple(pairs))
        if key not in cache:
            cache[key] = list(predict(exports.root / model, texts, pairs))
        return cache[key]

    return rows


@pytest.fixture(scope="module", params=["grpc", "rest-instances", "rest-inputs"])
def client(request, server):
    if request.param == "grpc":
        address, rest_format = server.grpc_address, "instances"
    else:
        address, rest_format = server.rest_address, request.param.split("-")[1]
    with Client(address, timeout=60, rest_format=rest_format) as client:
        yield client


@pytest.mark.parametrize("model, pairs", [("sst2", None), ("pairs", ["good story", "bad", "fun", ""]), ("ner", None)])
def test_rows_equal_tfsft_predict(client, local, model, pairs):
    texts = ["Peter flew from Zürich to New York .", "", "EU rejects", "word " * 50] if model == "ner" else TEXTS
    served = client.predict(model, texts, pairs)
    assert served == local(model, texts, pairs)  # exact: the floats travel as float32, strings as UTF-8
    assert [list(row) for row in served] == [list(row) for row in local(model, texts, pairs)]  # same key order
    if model == "ner":
        assert all(len(row["word_tags"]) == row["word_count"] for row in served)


def test_more_rows_than_a_batch_go_in_several_requests(client, local):
    texts = [f"film {i}" for i in range(70)]
    assert client.predict("sst2", texts) == local("sst2", texts)


def test_labels_and_versions_choose_the_served_version(client, local):
    v1, v2 = local("sst2/1", TEXTS), local("sst2/2", TEXTS)
    assert v1 != v2, "two seeds, two models"
    assert client.predict("sst2", TEXTS, label="stable") == v1  # models.config: stable = 1, canary = 2
    assert client.predict("sst2", TEXTS, label="canary") == v2
    assert client.predict("sst2", TEXTS, version=1) == v1
    assert client.predict("sst2", TEXTS) == v2  # no version: the newest loaded


def test_generation_rows_and_scalar_knobs(client):
    prompts = ["Name three colours.", "hi"]
    assert client.predict("chat", prompts) == [
        {"prompt": "Name three colours.", "completion": "NAME THREE COLOURS.", "num_tokens": 19,
         "finish_reason": "length", "prompt_truncated": False},
        {"prompt": "hi", "completion": "HI", "num_tokens": 2, "finish_reason": "length", "prompt_truncated": False}]
    rows = client.generate("chat", prompts, max_new_tokens=4, temperature=0.7, top_k=50, top_p=0.9, seed=1)
    assert [(r["completion"], r["num_tokens"]) for r in rows] == [("NAME", 4), ("HI", 2)]


def test_call_returns_the_signature_dtypes(client):
    out = client.call("sst2", {"text": ["good film"]})
    assert out["probabilities"].dtype == np.float32 and out["label_id"].dtype == np.int32
    assert out["label"].dtype == object and isinstance(out["label"][0], bytes)


def test_server_errors_are_serving_errors(client):
    with pytest.raises(ServingError, match="NOT_FOUND|HTTP 404"):
        client.predict("no_such_model", ["x"])
    with pytest.raises(ServingError, match="label"):
        client.predict("sst2", ["x"], label="beta")
    with pytest.raises(ServingError, match=r"takes inputs \['text'\]; received \['text', 'text_pair'\]"):
        client.predict("sst2", ["x"], ["y"])
    with pytest.raises(ValueError, match="version or a label"):
        client.predict("sst2", ["x"], version=1, label="stable")


def test_cli_predict_input_file_answers_every_line_blank_ones_included(exports, tmp_path, capsys):
    lines = tmp_path / "texts.txt"
    lines.write_text("\ufeffa gripping film\n\ndull\r\n", encoding="utf-8")
    assert main(["predict", str(exports.root / "sst2"), "--input", str(lines)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == ["a gripping film", "", "dull"]
    assert all(row["label"] in ("negative", "positive") for row in rows)


def test_unreachable_server_is_named():
    with pytest.raises(ServingError, match="127.0.0.1:9"):
        Client("http://127.0.0.1:9", timeout=5).predict("sst2", ["x"])
    with pytest.raises(ServingError, match="UNAVAILABLE"):
        Client("127.0.0.1:9", timeout=5).predict("sst2", ["x"])


def test_cli_predict_from_the_server_prints_the_local_lines(server, exports, capsys):
    args = ["--text", "a gripping film", "--text", "dull"]
    assert main(["predict", str(exports.root / "sst2"), *args]) == 0
    local = capsys.readouterr().out
    assert [json.loads(line)["text"] for line in local.splitlines()] == ["a gripping film", "dull"]
    for address in (server.grpc_address, server.rest_address):
        assert main(["predict", "--server", address, "--model", "sst2", *args]) == 0
        assert capsys.readouterr().out == local  # the same JSON lines, byte for byte
    assert main(["predict", "--server", server.grpc_address, *args]) == 2
    assert "--model NAME" in capsys.readouterr().err
