"""Config validation: every error kind, all at once, with dotted paths."""

from pathlib import Path

import pytest
import yaml

from tfsft.config import ConfigError, save_config
from tfsft.experiment import config_from_mapping, load_config

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {
        "name": "t",
        "task": {"name": "text_classification"},
        "data": {"files": {"train": "a.tsv"}},
    }


def problems(raw, overrides=()) -> dict:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw, overrides)
    return dict(info.value.problems)


def test_minimal_config_gets_defaults():
    config = config_from_mapping(base())
    assert config.train.precision == "mixed_bfloat16"
    assert config.task.pooling == "first"
    assert config.run_path == Path("runs/t")


def test_unknown_key_is_reported_with_path_and_choices():
    raw = base()
    raw["data"]["text_colum"] = "x"
    found = problems(raw)
    assert "data.text_colum" in found
    assert "text_column" in found["data.text_colum"]


def test_wrong_types_and_impossible_values_are_all_reported_at_once():
    raw = base()
    raw["train"] = {"learning_rate": -1.0, "batch_size": "big", "precision": "fp8", "warmup_ratio": 2.0}
    raw["model"] = {"hidden_dim": 30, "num_heads": 4}
    found = problems(raw)
    assert "integer" in found["train.batch_size"]
    assert "mixed_bfloat16" in found["train.precision"]
    assert "divisible" in found["model.hidden_dim"]
    # value checks of a section run once its types are right
    raw["train"]["batch_size"] = 8
    raw["train"]["precision"] = "float32"
    found = problems(raw)
    assert "> 0" in found["train.learning_rate"]
    assert "[0, 1)" in found["train.warmup_ratio"]


def test_unknown_task_name_lists_known_tasks():
    raw = base()
    raw["task"] = {"name": "sentiment_magic"}
    found = problems(raw)
    assert "text_classification" in found["task.name"]


def test_missing_required_sections():
    found = problems({"name": "x"})
    assert "text_classification" in found["task"]
    assert "required" in found["data"]


def test_task_option_validation():
    raw = base()
    raw["task"].update(labels=["pos"], label_smoothing=1.5)
    found = problems(raw)
    assert "at least 2" in found["task.labels"]
    assert "[0, 1)" in found["task.label_smoothing"]


def test_empty_label_column_is_rejected():
    raw = base()
    raw["data"]["label_column"] = None
    found = problems(raw)
    assert "expected a string" in found["data.label_column"]


def test_overrides_go_through_validation():
    config = config_from_mapping(base(), ["train.learning_rate=3e-5", "model.sequence_length=64"])
    assert config.train.learning_rate == pytest.approx(3e-5)
    assert config.model.sequence_length == 64
    found = problems(base(), ["train.learning_rate=-3"])
    assert "train.learning_rate" in found
    found = problems(base(), ["train.learning_rat=1"])
    assert "train.learning_rat" in found


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.yaml.*invalid YAML at line \d+, column \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    config = config_from_mapping(base(), ["train.epochs=2"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.name
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "each shipped config starts with a comment saying how to run it"
    assert "tfsft " in path.read_text().split("\n\n")[0] or "tfsft " in "\n".join(
        line for line in path.read_text().splitlines() if line.startswith("#")
    )
    yaml.safe_load(path.read_text())
