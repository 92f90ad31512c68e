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


def test_unknown_key_is_reported_with_path_choices_and_the_closest_key():
    raw = base()
    raw["data"]["text_colum"] = "x"
    raw["train"] = {"max_step": 3, "zzz": 1}
    found = problems(raw)
    assert found["data.text_colum"].startswith("unknown key; did you mean text_column? expected one of files, ")
    assert "did you mean max_steps?" in found["train.max_step"]
    assert "did you mean" not in found["train.zzz"] and "max_steps" in found["train.zzz"]


def test_wrong_types_and_impossible_values_are_all_reported_at_once():
    raw = base()
    raw["train"] = {"learning_rate": -1.0, "batch_size": "big", "precision": "fp8", "warmup_ratio": 2.0}
    raw["model"] = {"hidden_dim": 30, "num_heads": 4}
    found = problems(raw)
    assert "integer" in found["train.batch_size"]
    assert "mixed_bfloat16" in found["train.precision"]
    assert "divisible" in found["model.hidden_dim"]
    # a type error in a section does not hide the value checks of its other keys
    assert "> 0" in found["train.learning_rate"]
    assert "[0, 1)" in found["train.warmup_ratio"]
    assert len(found) == 5


def test_checks_that_involve_a_key_with_a_wrong_type_are_left_out():
    raw = base()
    raw["model"] = {"hidden_dim": 30, "num_heads": "four", "dropout": 2.0}
    found = problems(raw)
    assert "integer" in found["model.num_heads"] and "[0, 1)" in found["model.dropout"]
    assert "model.hidden_dim" not in found  # "divisible by num_heads" would judge num_heads' default
    raw = base()
    raw["data"] = {"files": "a.tsv", "max_examples": 0}
    found = problems(raw)
    assert "mapping" in found["data.files"] and "> 0" in found["data.max_examples"]
    assert len(found) == 2  # not also "give data files or a tfds source"


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
    assert "expected str or int" in found["data.label_column"]


def test_columns_may_be_given_by_position():
    raw = base()
    raw["data"].update(header=False, text_column=3, label_column="1")
    data = config_from_mapping(raw).data
    assert (data.text_column, data.label_column) == ("3", "1")


def test_overrides_go_through_validation():
    config = config_from_mapping(base(), ["train.learning_rate=3e-5", "model.sequence_length=64"])
    assert config.train.learning_rate == pytest.approx(3e-5)
    assert config.model.sequence_length == 64
    found = problems(base(), ["train.learning_rate=-3"])
    assert "train.learning_rate" in found
    found = problems(base(), ["train.learning_rat=1"])
    assert "train.learning_rat" in found


def test_null_override_resets_a_key_to_its_default_or_null():
    raw = base()
    raw["train"] = {"batch_size": 8, "max_steps": 100, "clipnorm": 0.5}
    raw["data"]["files"]["validation"] = "b.tsv"
    raw["data"]["text_column"] = "sentence"
    config = config_from_mapping(raw, ["train.batch_size=null", "train.max_steps=null", "train.clipnorm=null",
                                       "data.files.validation=null", "data.text_column=", "seed=null"])
    assert config.train.batch_size == 32 and config.train.max_steps is None
    assert config.train.clipnorm is None  # a key that may be null becomes null
    assert config.data.files == {"train": "a.tsv"} and config.data.text_column == "text" and config.seed == 42
    assert "unknown key; did you mean batch_size?" in problems(base(), ["train.batch_sise=null"])["train.batch_sise"]
    assert "task.name" in problems(base(), ["task.name=null"])


def test_data_split_is_validated():
    raw = base()
    raw["data"]["files"]["validation"] = "b.tsv"
    raw["data"]["split"] = {"validation": 0.1, "test": 1.5}
    found = problems(raw)
    assert "files.validation is given too" in found["data.split.validation"]
    assert "(0, 1)" in found["data.split.test"]
    raw["data"]["split"] = {"validation": 0.5, "test": 0.5}
    assert "validation + test must be < 1" in problems(raw)["data.split.test"]
    raw["data"]["split"] = {"seed": 1}
    assert "give validation and/or test" in problems(raw)["data.split.validation"]
    raw = base()
    raw["data"]["split"] = {"test": 0.2, "seed": 3, "stratify": True}
    data = config_from_mapping(raw).data
    assert data.has_split("test") and not data.has_split("validation") and data.split.fractions() == {"test": 0.2}


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.yaml.*invalid YAML at line \d+, column \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_a_relative_path_not_found_names_the_folder_it_was_looked_up_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"cannot read the file: .*\(looked up in {tmp_path}\)"):
        load_config("configs/missing.yaml")


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
