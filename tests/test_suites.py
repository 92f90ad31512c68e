"""Suites: task selection, the shipped GLUE/SuperGLUE configs (local files, TFDS mock data), a tiny run, resume."""

import json

import pytest
import yaml

from tests.conftest import DATA_DIR, REPO, tiny_model, tiny_train, write_vocab
from tfsft import cli, suites
from tfsft.data import readers
from tfsft.tasks import get_task

CONFIGS = REPO / "configs"
LOCAL_COUNTS = {"sst2": (67_349, 872), "cola": (8_551, 1_043), "stsb": (5_749, 1_500), "mrpc": (4_076, 1_725)}


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS mock data; its datasets are never "prepared", so the offline check must see a network."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(readers, "_resolves", lambda host: True)
    with tfds.testing.mock_data(num_examples=6):
        yield


def task_config(suite: str, name: str, section: str):
    """A shipped task config laid over its suite's base, with one data section."""
    raw = suites.merged(suites.read_yaml(CONFIGS / suite / "base.yaml"),
                        suites.read_yaml(CONFIGS / suite / f"{name}.yaml"))
    if section not in raw:
        return None
    raw["data"] = raw.pop(section)
    raw.pop("tfds_data", None)
    return suites.config_from_mapping(raw, source=name)


def runnable(suite: str) -> list[str]:
    return [t.name for t in suites.SUITES[suite] if not t.unsupported]


def test_unknown_suite_and_task_names_are_errors(capsys):
    with pytest.raises(ValueError, match=r"suite glue: unknown task\(s\) 'colaa'; glue has cola, sst2, mrpc"):
        suites.select_tasks("glue", ["cola", "colaa"])
    with pytest.raises(ValueError, match=r"unknown suite 'glu'"):
        suites.select_tasks("glu")
    assert [t.name for t in suites.select_tasks("glue", ["stsb", "cola"])] == ["cola", "stsb"]  # suite order
    assert cli.main(["suite", "glue", "--task", "nope"]) == 2
    assert "unknown task(s) 'nope'" in capsys.readouterr().err


def test_every_runnable_task_has_a_config_and_every_config_a_task():
    for suite in suites.SUITES:
        files = {p.stem for p in (CONFIGS / suite).glob("*.yaml")} - {"base"}
        assert files == set(runnable(suite)), suite


@pytest.mark.parametrize("suite", list(suites.SUITES))
def test_tfds_sections_read_with_mock_data(suite, mock_tfds):
    for name in runnable(suite):
        config = task_config(suite, name, "tfds_data")
        task = get_task(config)
        for split in ("train", "validation", "test"):
            if config.data.has_split(split):
                examples = task.read(split)
                assert len(examples) == 6 and examples.source.startswith(f"tfds:{config.data.tfds.name}[")
        task.fit_labels(task.read("train"))
        metrics = {m.key for m in next(t for t in suites.SUITES[suite] if t.name == name).metrics}
        assert metrics <= {"accuracy", "mcc", "binary_f1", "macro_f1", "pearson", "spearman"}
    mnli = task_config("glue", "mnli", "tfds_data").data.tfds
    assert (mnli.validation, mnli.test) == ("validation_matched", "validation_mismatched")


@pytest.mark.skipif(not (DATA_DIR / "glue" / "cola").exists(), reason=f"the GLUE files are not at {DATA_DIR}")
@pytest.mark.parametrize("name", sorted(LOCAL_COUNTS))
def test_local_sections_read_the_shared_files(name, monkeypatch):
    monkeypatch.setenv("TFSFT_DATA_DIR", str(DATA_DIR))
    config = task_config("glue", name, "data")
    assert suites.unreachable(config.data) is None
    task = get_task(config)
    train, validation = task.read("train"), task.read("validation")
    assert (len(train), len(validation)) == LOCAL_COUNTS[name]
    task.fit_labels(train)
    if name != "stsb":
        assert task.labels == ["0", "1"]  # class 1 is the positive one (binary F1)


def test_unreachable_data_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSFT_DATA_DIR", str(tmp_path))  # a data directory without the files
    reason = suites.unreachable(task_config("glue", "cola", "data").data)
    assert reason == f"files not found: {tmp_path / 'glue/cola/train.tsv'}, {tmp_path / 'glue/cola/dev.tsv'}"
    monkeypatch.delenv("TFSFT_DATA_DIR")
    assert suites.unreachable(task_config("glue", "cola", "data").data).endswith("(TFSFT_DATA_DIR is not set)")


def test_a_tiny_suite_skips_fails_resumes_and_writes_one_table(tmp_path, mock_tfds, monkeypatch):
    """cola from local files, rte from TFDS mock data, mrpc without data, wnli with a broken config, ax unsupported."""
    configs, data = tmp_path / "configs", tmp_path / "data"
    configs.mkdir()
    (data / "glue" / "cola").mkdir(parents=True)
    rows = [("gj04", "1", "", "the film is good ."), ("gj04", "0", "*", "film the good is .")] * 8
    for split in ("train", "dev"):
        (data / "glue" / "cola" / f"{split}.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))
    monkeypatch.setenv("TFSFT_DATA_DIR", str(data))
    base = {"model": tiny_model(write_vocab(tmp_path / "vocab.txt")), "train": tiny_train(max_steps=2)}
    task_files = {
        "cola": (CONFIGS / "glue" / "cola.yaml").read_text(),  # the shipped one, on the tiny files
        "rte": (CONFIGS / "glue" / "rte.yaml").read_text(),
        "mrpc": yaml.safe_dump({"task": {"name": "text_classification"}, "data": {"files": {"train": "no.tsv"}}}),
        "wnli": yaml.safe_dump({"task": {"name": "text_classification"}, "tfds_data": {"tfds": {"name": "glue/wnli"}},
                                "train": {"epochs": -1}}),
    }
    (configs / "base.yaml").write_text(yaml.safe_dump(base))
    for name, text in task_files.items():
        (configs / f"{name}.yaml").write_text(text)
    lines = []
    kwargs = dict(config_dir=configs, run_dir=tmp_path / "runs", tasks=["cola", "mrpc", "rte", "wnli", "ax"],
                  overrides=["model.sequence_length=32"], log=lines.append)
    with pytest.raises(RuntimeError, match=r"suite glue: WNLI failed"):
        suites.run_suite("glue", **kwargs)

    summary = json.loads((tmp_path / "runs" / "results.json").read_text())
    status = {t["task"]: (t["status"], t["reason"]) for t in summary["tasks"]}
    assert status["cola"] == ("done", "") and status["rte"] == ("done", "")
    assert status["mrpc"][0] == "skipped" and "files not found" in status["mrpc"][1]
    assert status["wnli"][0] == "failed" and "train.epochs: must be > 0" in status["wnli"][1]
    assert status["ax"] == ("skipped", suites.SUITES["glue"][-1].unsupported)
    (cola,) = [t for t in summary["tasks"] if t["task"] == "cola"][0]["figures"]
    assert cola["label"] == "MCC" and cola["reference"] == 47.5 and -100 <= cola["value"] <= 100
    assert cola["evaluated_on"] == "glue/cola/dev.tsv (16)"
    rte = [t for t in summary["tasks"] if t["task"] == "rte"][0]
    assert rte["data"] == "tfds:glue/rte[train]"
    assert rte["figures"][0]["evaluated_on"] == "tfds:glue/rte[validation] (6)"
    table = (tmp_path / "runs" / "results.md").read_text()
    assert "| CoLA | MCC |" in table and "| 47.5 | MiniLM-L6-H384, GLUE dev | glue/cola/dev.tsv (16) |" in table
    assert "| MRPC | skipped: files not found" in table and "| AX | skipped: diagnostic set" in table
    assert "| WNLI | failed: ConfigError: " in table and "has 1 problem: train.epochs: must be > 0" in table
    assert any(line.startswith("[1/5] CoLA: 4 task(s) after this one") for line in lines)
    assert any(line.startswith("[1/5] CoLA | Training 2 steps") for line in lines)

    lines.clear()  # again: the finished tasks are not trained twice
    with pytest.raises(RuntimeError):
        suites.run_suite("glue", **kwargs)
    assert any("CoLA | done earlier" in line for line in lines)
    assert not any("Training" in line for line in lines if "CoLA" in line or "RTE" in line)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "glue" / "cola").exists(), reason=f"the GLUE files are not at {DATA_DIR}")
def test_the_local_glue_tasks_run_shrunk_with_minilm(tmp_path, monkeypatch):
    """The shipped configs with the real MiniLM, 64 examples per split, 3 steps each (the real run: docs/suites.md)."""
    monkeypatch.setenv("TFSFT_DATA_DIR", str(DATA_DIR))
    results = suites.run_suite("glue", run_dir=tmp_path / "runs", tasks=list(LOCAL_COUNTS), log=lambda _: None,
                               overrides=["train.max_steps=3", "train.eval_every_steps=3", "data.max_examples=64"],
                               config_dir=CONFIGS / "glue")
    assert [r.status for r in results] == ["done"] * 4
    figures = {(r.task, f["label"]): f for r in results for f in r.figures}
    assert set(figures) == {("sst2", "accuracy"), ("cola", "MCC"), ("mrpc", "F1"), ("mrpc", "accuracy"),
                            ("stsb", "Pearson"), ("stsb", "Spearman")}
    assert figures["mrpc", "F1"]["evaluated_on"] == "glue/mrpc/msr_paraphrase_test.txt (64)"
