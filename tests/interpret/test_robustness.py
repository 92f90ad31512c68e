"""`robustness()` and `tfsft robustness` on tiny trained runs: the table, reproducible, written as MD/JSON/PNG."""

import json

import pytest

from tfsft.cli import main
from tfsft.interpret import InterpretError, robustness
from tfsft.interpret.perturbations import PERTURBATIONS


def quiet(_):
    pass


def test_robustness_of_a_classifier_is_reproducible_and_starts_from_the_evaluated_accuracy(classifier_run, tmp_path):
    report = robustness(classifier_run, "validation", seed=1, rate=0.5, out_dir=tmp_path / "a", log=quiet)
    again = robustness(classifier_run, "validation", seed=1, rate=0.5, out_dir=tmp_path / "b", log=quiet)
    assert report == again
    assert (tmp_path / "a" / "robustness.json").read_text() == (tmp_path / "b" / "robustness.json").read_text()

    rows = {row["perturbation"]: row for row in report["rows"]}
    assert list(rows) == ["none", *PERTURBATIONS] and report["metric"] == "accuracy" and report["examples"] == 16
    evaluated = json.loads((classifier_run / "metrics.json").read_text())["accuracy"]  # validation = this split
    assert rows["none"]["metric"] == pytest.approx(evaluated)
    assert rows["casing"]["changed"] > 0 and rows["typos"]["changed"] > 0 and rows["whitespace"]["changed"] > 0
    assert rows["punctuation"]["changed"] == 0  # the tiny data has none: nothing to remove, nothing flips
    assert rows["punctuation"]["metric"] == rows["none"]["metric"] and rows["punctuation"]["flipped"] == 0
    # The tiny tokenizer lowercases and splits at any whitespace: the model cannot see these two.
    assert rows["casing"]["flipped"] == 0 and rows["whitespace"]["flipped"] == 0
    assert 0 <= rows["typos"]["flipped"] <= 1
    flipped = report["flipped_examples"]["typos"]
    assert len(flipped) == min(5, round(rows["typos"]["flipped"] * 16))
    assert all(row["before"] != row["after"] and row["text"] != row["perturbed"] for row in flipped)

    table = (tmp_path / "a" / "robustness.md").read_text().splitlines()
    assert table[0] == "| perturbation | examples changed | accuracy | Δ accuracy | predictions flipped |"
    assert [line.split(" | ")[0].strip("| ") for line in table[2:]] == ["none", *PERTURBATIONS]
    assert (tmp_path / "a" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_robustness_of_a_tagger_scores_entity_f1_on_the_words_kept(tagger_run, tmp_path):
    report = robustness(tagger_run, "validation", seed=0, rate=0.5, out_dir=tmp_path / "ner", log=quiet)
    rows = {row["perturbation"]: row for row in report["rows"]}
    assert report["metric"] == "entity_f1" and report["examples"] == 16
    evaluated = json.loads((tagger_run / "metrics.json").read_text())["f1"]
    assert rows["none"]["metric"] == pytest.approx(evaluated)
    assert rows["punctuation"]["changed"] == 0.75  # 3 of the 4 sentences (each 4 times) end with "." or "!"
    assert all(0 <= row["metric"] <= 1 and 0 <= row["flipped"] <= 1 for row in report["rows"])
    assert rows["whitespace"]["changed"] > 0 and rows["casing"]["changed"] > 0 and rows["typos"]["changed"] > 0
    table = (tmp_path / "ner" / "robustness.md").read_text()
    assert "tags flipped (of words)" in table and "entity_f1" in table


def test_tfsft_robustness_writes_the_table_json_and_png_and_checks_its_options(classifier_run, tmp_path, capfd):
    out = tmp_path / "cli"
    assert main(["robustness", str(classifier_run), "--split", "validation", "--seed", "3", "--perturbation",
                 "typos", "--perturbation", "casing", "--out", str(out)]) == 0
    assert "| typos |" in capfd.readouterr().out
    assert {p.name for p in out.iterdir()} == {"robustness.md", "robustness.json", "robustness.png"}
    assert [row["perturbation"] for row in json.loads((out / "robustness.json").read_text())["rows"]] == \
        ["none", "typos", "casing"]
    with pytest.raises(InterpretError, match=r"rate must be in \(0, 1\]"):
        robustness(classifier_run, rate=0.0, log=quiet)
    with pytest.raises(InterpretError, match="perturbations: expected some of casing, typos"):
        robustness(classifier_run, perturbations=["emoji"], log=quiet)
