"""`robustness()`: how a fine-tuned model holds up under perturbations that keep the meaning.

For each perturbation of `perturbations.py` (seeded, reproducible), the split
is perturbed, predicted again and scored with the task's metric: accuracy
(text classification), Pearson correlation (text regression), entity F1
(token classification; plain tags: word accuracy). Beside the score:

- changed: the fraction of examples whose input the perturbation altered;
- flipped: the fraction of predictions that differ from the unperturbed ones
  (text classification: labels; token classification: tags of the words
  kept), or for regression the mean |Δ score|.

The "none" row is the unperturbed split (the figure `tfsft evaluate` gives).
Writes `robustness.json` (with up to 5 flipped examples per perturbation),
`robustness.md` (the table) and `robustness.png` to `out_dir` (default
`<run_dir>/robustness_<split>`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tfsft.data.pipeline import predict_split
from tfsft.interpret.explanation import check_run
from tfsft.interpret.perturbations import PERTURBATIONS, perturb_text, perturb_words, rng_for
from tfsft.interpret.report import pyplot
from tfsft.interpret.split import InterpretError
from tfsft.models import fast_matmul
from tfsft.run_dir import load_run
from tfsft.tasks.token_classification.task import entity_metrics, tag_metrics

EXAMPLES_KEPT = 5


def _text_rows(run, examples, perturbations, seed: int, rate: float, encoder, batch_size: int):
    """(metric name, rows, flipped examples) for text classification / regression."""
    regression = run.config.task.name == "text_regression"
    targets = run.task.targets(examples)

    def predict(texts, pairs):
        encoded = run.task.encode(replace(examples, texts=texts, pairs=pairs), encoder, training=False)
        outputs = predict_split(run.model, encoded, pad_id=encoder.pad_id, batch_size=batch_size)
        return outputs[:, 0] if regression else outputs.argmax(axis=-1)

    def score(predicted):
        return float(np.corrcoef(targets, predicted)[0, 1]) if regression else float(np.mean(predicted == targets))

    def name(value):
        return f"{value:.4f}" if regression else run.task.label_names[int(value)]

    clean = predict(examples.texts, examples.pairs)
    rows = [{"perturbation": "none", "changed": 0.0, "metric": score(clean), "flipped": 0.0}]
    flips = {}
    for perturbation in perturbations:
        texts, pairs = [], None if examples.pairs is None else []
        for i, text in enumerate(examples.texts):
            rng = rng_for(seed, perturbation, i)
            texts.append(perturb_text(perturbation, text, rng, rate))
            if pairs is not None:
                pairs.append(perturb_text(perturbation, examples.pairs[i], rng, rate))
        predicted = predict(texts, pairs)
        changed = [t != o for t, o in zip(texts, examples.texts)]
        if pairs is not None:
            changed = [c or p != o for c, p, o in zip(changed, pairs, examples.pairs)]
        flipped = np.abs(predicted - clean) if regression else (predicted != clean)
        rows.append({"perturbation": perturbation, "changed": float(np.mean(changed)), "metric": score(predicted),
                     "flipped": float(np.mean(flipped))})
        order = np.argsort(-flipped, kind="stable") if regression else np.nonzero(flipped)[0]
        flips[perturbation] = [{"line": examples.lines[i], "text": examples.texts[i], "perturbed": texts[i],
                                "before": name(clean[i]), "after": name(predicted[i])}
                               for i in order[:EXAMPLES_KEPT]]
    return ("pearson" if regression else "accuracy"), rows, flips


def _tag_rows(run, examples, perturbations, seed: int, rate: float, encoder, batch_size: int):
    """(metric name, rows, flipped examples) for token classification."""
    plain = run.task.plain
    run.task.targets(examples)  # every gold tag must be in the label set

    def predict(sentences):
        nonempty = [i for i, s in enumerate(sentences) if s]
        tags = run.task.predict_tags(run.model, encoder, [sentences[i] for i in nonempty], batch_size)
        out = [[] for _ in sentences]
        for i, t in zip(nonempty, tags):
            out[i] = t
        return out

    def score(gold, predicted):
        pairs = [(g, p) for g, p in zip(gold, predicted) if g]
        gold, predicted = [g for g, _ in pairs], [p for _, p in pairs]
        return tag_metrics(gold, predicted)["token_accuracy"] if plain else entity_metrics(gold, predicted)["f1"]

    clean = predict(examples.tokens)
    rows = [{"perturbation": "none", "changed": 0.0, "metric": score(examples.tags, clean), "flipped": 0.0}]
    flips = {}
    for perturbation in perturbations:
        sentences, kept = [], []
        for i, words in enumerate(examples.tokens):
            new, keep = perturb_words(perturbation, words, rng_for(seed, perturbation, i), rate)
            sentences.append(new)
            kept.append(keep)
        predicted = predict(sentences)
        gold = [[tags[k] for k in keep] for tags, keep in zip(examples.tags, kept)]
        before = [[tags[k] for k in keep] for tags, keep in zip(clean, kept)]
        changed = [s != w for s, w in zip(sentences, examples.tokens)]
        flipped_words = sum(sum(a != b for a, b in zip(x, y)) for x, y in zip(before, predicted))
        rows.append({"perturbation": perturbation, "changed": float(np.mean(changed)),
                     "metric": score(gold, predicted), "flipped": flipped_words / max(1, sum(map(len, before)))})
        flips[perturbation] = [
            {"line": examples.lines[i], "words": " ".join(examples.tokens[i]), "perturbed": " ".join(sentences[i]),
             "changed_tags": [[sentences[i][j].strip(), b, a] for j, (b, a) in enumerate(zip(before[i], predicted[i]))
                              if a != b]}
            for i in range(len(sentences)) if before[i] != predicted[i]][:EXAMPLES_KEPT]
    return ("word_accuracy" if plain else "entity_f1"), rows, flips


def format_robustness_table(report: dict) -> str:
    """The report as a Markdown table."""
    metric, regression = report["metric"], report["task"] == "text_regression"
    flipped = "mean abs Δ score" if regression else \
        "tags flipped (of words)" if report["task"] == "token_classification" else "predictions flipped"
    lines = [f"| perturbation | examples changed | {metric} | Δ {metric} | {flipped} |", "|---|---:|---:|---:|---:|"]
    clean = report["rows"][0]["metric"]
    for row in report["rows"]:
        if row["perturbation"] == "none":
            lines.append(f"| none | – | {row['metric']:.4f} | – | – |")
            continue
        shown = f"{row['flipped']:.4f}" if regression else f"{100 * row['flipped']:.2f} %"
        lines.append(f"| {row['perturbation']} | {100 * row['changed']:.1f} % | {row['metric']:.4f} | "
                     f"{row['metric'] - clean:+.4f} | {shown} |")
    return "\n".join(lines)


def plot_robustness(report: dict, path: Path) -> None:
    """Two bar charts: the metric per perturbation (the clean figure as a dashed line) and the flips."""
    plt = pyplot()
    rows = report["rows"]
    names = [row["perturbation"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(names, [row["metric"] for row in rows], color=["0.55"] + ["tab:blue"] * (len(rows) - 1))
    left.axhline(rows[0]["metric"], color="black", linestyle="--", linewidth=0.8)
    low, high = min(row["metric"] for row in rows), max(row["metric"] for row in rows)
    left.set_ylim(max(0.0, low - 0.1) if low >= 0 else low - 0.1, min(1.0, high + 0.05))
    left.set_ylabel(report["metric"])
    right.bar(names[1:], [row["flipped"] * (1 if report["task"] == "text_regression" else 100) for row in rows[1:]],
              color="tab:orange")
    right.set_ylabel("mean |Δ score|" if report["task"] == "text_regression" else "flipped (%)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"{Path(report['run_dir']).name}, {report['split']}: seed {report['seed']}, rate {report['rate']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@fast_matmul.fast_projections()
def robustness(run_dir: str | Path, split: str = "validation", *, seed: int = 0, rate: float = 0.1,
               perturbations: Sequence[str] = PERTURBATIONS, out_dir: str | Path | None = None,
               data_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Scores the run on `split` under each perturbation (see the module doc); returns the report.

    Args:
        run_dir: a finished text classification, regression or token classification run.
        split: "train", "validation" or "test", read as `tfsft evaluate` reads it.
        seed: the perturbations' seed (same seed, same perturbed texts).
        rate: the probability with which casing, typos and whitespace touch each word or gap, in (0, 1].
        perturbations: which of casing, typos, punctuation, whitespace to run.
        out_dir: where the report files go (default `<run_dir>/robustness_<split>`).
        data_dir: read the run's data files from this folder instead.

    Example:
        >>> report = robustness("runs/sst2_minilm", "validation", seed=0)
        >>> [(row["perturbation"], row["metric"], row["flipped"]) for row in report["rows"]]
    """
    path = Path(run_dir)
    task_name = check_run(path)
    if not 0.0 < rate <= 1.0:
        raise InterpretError(f"rate must be in (0, 1]. Received: rate={rate}")
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown or not perturbations:
        raise InterpretError(f"perturbations: expected some of {', '.join(PERTURBATIONS)}. "
                             f"Received: {list(perturbations)}")
    run = load_run(path, data_dir=data_dir)
    examples = run.task.read(split)
    encoder = run.task.make_encoder(run.tokenizer, run.config.model.sequence_length)
    rows_of = _tag_rows if task_name == "token_classification" else _text_rows
    metric, rows, flips = rows_of(run, examples, list(perturbations), seed, rate, encoder,
                                  run.config.train.eval_batch_size)
    report = {"run_dir": str(path), "task": task_name, "split": split, "examples": len(examples), "seed": seed,
              "rate": rate, "metric": metric, "rows": rows, "flipped_examples": flips}
    out = Path(out_dir) if out_dir else path / f"robustness_{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = format_robustness_table(report)
    (out / "robustness.md").write_text(table + "\n", encoding="utf-8")
    plot_robustness(report, out / "robustness.png")
    log(table)
    log(f"Wrote {out / 'robustness.md'}, robustness.json and robustness.png")
    return report
