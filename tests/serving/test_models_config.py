"""`tfsft serving-config`: a models.config that parses as TF Serving's ModelServerConfig."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfsft.cli import main
from tfsft.serving.models_config import ServingConfigError, parse_labels, write_models_config


def export_root(tmp_path, models: dict[str, list[int]]):
    for name, versions in models.items():
        for version in versions:
            (tmp_path / name / str(version)).mkdir(parents=True)
            (tmp_path / name / str(version) / "saved_model.pb").write_bytes(b"")
    (tmp_path / "sst2" / ".4.partial").mkdir(exist_ok=True)  # an export being written is no version
    return tmp_path


def read(path) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())


def by_name(config) -> dict:
    return {c.name: c for c in config.model_config_list.config}


def test_default_policy_and_labels(tmp_path):
    root = export_root(tmp_path, {"sst2": [1, 2, 3], "conll2003": [1]})
    models = by_name(read(write_models_config(root)))
    assert list(models) == ["conll2003", "sst2"]
    sst2 = models["sst2"]
    assert (sst2.base_path, sst2.model_platform) == ("/models/sst2", "tensorflow")
    assert list(sst2.model_version_policy.specific.versions) == [2, 3]  # version 1 is not loaded
    assert dict(sst2.version_labels) == {"stable": 2, "canary": 3}
    assert dict(models["conll2003"].version_labels) == {"stable": 1}


def test_given_labels_replace_a_models_defaults(tmp_path, capsys):
    root = export_root(tmp_path, {"sst2": [1, 2, 3], "conll2003": [1, 2]})
    output = tmp_path / "elsewhere.config"
    assert main(["serving-config", str(root), "--output", str(output), "--base-path", "/srv/models/",
                 "--label", "sst2:stable=3", "--label", "sst2:canary_b=1"]) == 0
    assert capsys.readouterr().out == f"Wrote {output}\n"
    models = by_name(read(output))
    assert models["sst2"].base_path == "/srv/models/sst2"
    assert list(models["sst2"].model_version_policy.specific.versions) == [1, 3]
    assert dict(models["sst2"].version_labels) == {"stable": 3, "canary_b": 1}
    assert dict(models["conll2003"].version_labels) == {"stable": 1, "canary": 2}


@pytest.mark.parametrize("labels, message", [
    (["bert:stable=1"], "label for model 'bert': not in .* \\(has sst2\\)"),
    (["sst2:stable=7"], "label sst2:stable=7: .*sst2 has versions 1, 2"),
    (["sst2:can-ary=1"], "label 'can-ary' of model 'sst2': TF Serving allows only"),
    (["sst2=1"], "label 'sst2=1': expected MODEL:LABEL=VERSION"),
])
def test_bad_labels_are_named(tmp_path, labels, message):
    root = export_root(tmp_path, {"sst2": [1, 2]})
    with pytest.raises(ServingConfigError, match=message):
        write_models_config(root, labels=parse_labels(labels))


def test_an_empty_export_root_says_how_to_fill_it(tmp_path, capsys):
    assert main(["serving-config", str(tmp_path)]) == 2
    assert f"{tmp_path}: no exported model" in capsys.readouterr().err
