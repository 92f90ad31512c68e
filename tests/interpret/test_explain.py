"""`explain()` and `tfsft explain` on tiny trained runs: the answer, complete attributions, the report files."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfsft.cli import main
from tfsft.interpret import InterpretError, explain
from tfsft.run_dir import load_run

PNG = b"\x89PNG"


def quiet(_):
    pass


def model_probabilities(run, tokens):
    """The run's own model (as saved) on word pieces, for checking what explain reports."""
    ids = np.array([[run.tokenizer.token_to_id(token) for token in tokens]], np.int32)
    logits = run.model({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)})
    return tf.nn.softmax(logits)[0].numpy()


def test_a_classifier_explanation_is_the_models_answer_and_its_attributions_are_complete(classifier_run, tmp_path):
    coarse = explain(classifier_run, "a good film", steps=4, out_dir=tmp_path / "coarse", log=quiet)
    fine = explain(classifier_run, "a good film", steps=64, out_dir=tmp_path / "fine", log=quiet)
    assert fine.words == ["a", "good", "film"] and fine.tokens == ["[CLS]", "a", "good", "film", "[SEP]"]
    (target,) = fine.targets
    assert target.label == fine.prediction["label"]

    run = load_run(classifier_run)
    label = run.task.label_names.index(target.label)
    assert target.output == pytest.approx(model_probabilities(run, fine.tokens)[label], abs=1e-5)
    baseline = model_probabilities(run, ["[CLS]", "[PAD]", "[PAD]", "[PAD]", "[SEP]"])  # [PAD] at every word piece
    assert target.baseline_output == pytest.approx(baseline[label], abs=1e-5)

    assert target.token_attributions[[0, -1]].tolist() == [0.0, 0.0]  # [CLS] and [SEP] are the baseline's too
    assert target.word_attributions.sum() == pytest.approx(target.token_attributions.sum())
    assert fine.targets[0].completeness_error <= max(coarse.targets[0].completeness_error / 4, 1e-6)
    assert fine.targets[0].completeness_error < 1e-3
    assert fine.attention.shape == (1, 2, 5, 5)
    np.testing.assert_allclose(fine.attention.sum(axis=-1), 1.0, atol=1e-5)

    saved = json.loads((tmp_path / "fine" / "explanation.json").read_text())
    assert saved["words"] == fine.words and saved["steps"] == 64
    assert saved["targets"][0]["word_attributions"] == pytest.approx(target.word_attributions.tolist())
    assert saved["targets"][0]["completeness_error"] == pytest.approx(target.completeness_error)
    page = (tmp_path / "fine" / "explanation.html").read_text()
    assert ">good</span>" in page and "attention_layer_0.png" in page and "attributions.png" in page
    for name in ("attributions.png", "attention_layer_0.png"):
        assert (tmp_path / "fine" / name).read_bytes()[:4] == PNG


def test_another_label_and_the_mask_baseline(classifier_run, tmp_path):
    other = "neg" if explain(classifier_run, "bad film", steps=2, out_dir=tmp_path / "a",
                             log=quiet).prediction["label"] == "pos" else "pos"
    explained = explain(classifier_run, "bad film", steps=2, label=other, baseline="mask", out_dir=tmp_path / "b",
                        log=quiet)
    assert explained.targets[0].label == other and explained.baseline == "mask"
    with pytest.raises(InterpretError, match=r"label: 'great' is not a class of this run; expected one of"):
        explain(classifier_run, "bad film", label="great", out_dir=tmp_path / "c", log=quiet)
    with pytest.raises(InterpretError, match="steps must be ≥ 1"):
        explain(classifier_run, "bad film", steps=0, log=quiet)
    with pytest.raises(InterpretError, match="has no words to explain"):
        explain(classifier_run, "  ", out_dir=tmp_path / "d", log=quiet)


def test_a_tagger_explains_each_entity_words_tag(tagger_run, tmp_path):
    explained = explain(tagger_run, "Peter loves Paris .", steps=32, out_dir=tmp_path / "ner", log=quiet)
    assert explained.words == ["Peter", "loves", "Paris", "."]
    tags = [row["tag"] for row in explained.prediction["tags"]]
    expected = [i for i, tag in enumerate(tags) if tag != "O"] or list(range(4))
    assert [t.word for t in explained.targets] == expected
    for target in explained.targets:
        assert target.label == tags[target.word]
        assert target.output == pytest.approx(explained.prediction["tags"][target.word]["probability"], abs=1e-5)
        assert target.completeness_error < 1e-3
        assert target.word_attributions.shape == (4,)
    assert (tmp_path / "ner" / "attributions.png").read_bytes()[:4] == PNG

    (second,) = explain(tagger_run, "Peter loves Paris .", steps=4, words=[1], out_dir=tmp_path / "w",
                        log=quiet).targets
    assert second.word == 1
    with pytest.raises(InterpretError, match=r"word: 9 is out of range; the text has 4 words"):
        explain(tagger_run, "Peter loves Paris .", words=[9], out_dir=tmp_path / "x", log=quiet)
    with pytest.raises(InterpretError, match="more word pieces than one window holds"):
        explain(tagger_run, " ".join(["Blackburn"] * 10), out_dir=tmp_path / "y", log=quiet)


def test_tfsft_explain_writes_html_png_and_json(classifier_run, tmp_path, capfd):
    out = tmp_path / "cli"
    assert main(["explain", str(classifier_run), "--text", "a good film", "--steps", "8", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "completeness error" in printed and "explanation.html" in printed
    assert {p.name for p in out.iterdir()} == {"explanation.html", "explanation.json", "attributions.png",
                                               "attention_layer_0.png"}


def test_clear_errors_for_a_missing_run_and_an_unsupported_task(tmp_path, capfd):
    assert main(["explain", str(tmp_path / "nothing"), "--text", "x"]) == 2
    assert "no config.yaml; is this a finished run directory" in capfd.readouterr().err
    translation = tmp_path / "translation"
    translation.mkdir()
    (translation / "config.yaml").write_text("task: {name: translation}\n")
    for command in (["explain", str(translation), "--text", "x"], ["robustness", str(translation)]):
        assert main(command) == 2
        assert "a translation run; explanations and robustness reports support text_classification" in \
            capfd.readouterr().err


def test_only_the_cli_imports_interpret():
    from tests.test_import_graph import import_graph

    importers = {module for module, imports in import_graph().items()
                 if any(m.startswith("tfsft.interpret") for m in imports) and not module.startswith("tfsft.interpret")}
    assert importers == {"tfsft.cli"}
