"""An explanation on disk: `explanation.html` (words shaded by attribution, the attention heatmaps),
`attributions.png`, `attention_layer_<l>.png` (one heatmap per head) and `explanation.json` (the numbers).

Colours: red pushes the explained output up, blue pushes it down; the shade is
|attribution| over the largest |attribution| of that output.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

POSITIVE, NEGATIVE = (214, 39, 40), (31, 119, 180)  # matplotlib's tab:red and tab:blue


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shade(value: float, scale: float) -> str:
    red, green, blue = POSITIVE if value >= 0 else NEGATIVE
    alpha = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    return f"rgba({red}, {green}, {blue}, {alpha:.3f})"


def _target_title(explanation, target) -> str:
    what = f"{target.label}" if target.word is None else f"{explanation.words[target.word]} → {target.label}"
    return (f"{what}: {explanation.output_name} {target.output:.3f} (baseline {target.baseline_output:.3f}; "
            f"attributions sum to {target.token_attributions.sum():+.3f})")


def plot_attributions(explanation, path: Path) -> None:
    """One explained output: a bar per word. Several (token classification): a heatmap, explained word × input word."""
    plt = pyplot()
    words = explanation.words
    values = np.array([t.word_attributions for t in explanation.targets])  # (T, W)
    if len(explanation.targets) == 1:
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(words)))
        ax.barh(range(len(words)), values[0], color=[tuple(c / 255 for c in (POSITIVE if v >= 0 else NEGATIVE))
                                                     for v in values[0]])
        ax.set_yticks(range(len(words)), words)
        ax.invert_yaxis()  # first word on top
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("integrated-gradients attribution")
        ax.set_title(_target_title(explanation, explanation.targets[0]), fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.6 * len(words)), 1.8 + 0.45 * len(explanation.targets)))
        scale = float(np.abs(values).max()) or 1.0
        ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
        ax.set_xticks(range(len(words)), words, rotation=45, ha="right")
        ax.set_yticks(range(len(values)), [f"{words[t.word]} → {t.label}" for t in explanation.targets])
        ax.set_xlabel("input word")
        ax.set_title(f"attribution of each word's tag {explanation.output_name} to the input words", fontsize=9)
        if values.size <= 400:
            for (i, j), value in np.ndenumerate(values):
                ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 * scale else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_attention_layer(maps: np.ndarray, tokens: list[str], layer: int, path: Path) -> None:
    """One layer's heads (H, L, L), a heatmap each: rows are queries, columns keys, shade = probability."""
    plt = pyplot()
    heads, length = maps.shape[0], maps.shape[1]
    columns = min(4, heads)
    rows = math.ceil(heads / columns)
    panel = min(4.0, 1.2 + 0.16 * length)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * panel, rows * panel + 0.4), squeeze=False)
    labels = length <= 48
    fontsize = 7 if length <= 20 else 5
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(maps[h], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}", fontsize=8)
        if labels:
            ax.set_xticks(range(length), tokens, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(length), tokens, fontsize=fontsize)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"layer {layer}: attention probabilities (row: query token, column: key token)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _html(explanation, attention_files: list[str]) -> str:
    e = explanation
    parts = [f"<h1>Why the model answered as it did</h1><p>run <code>{html.escape(e.run_dir)}</code> · task "
             f"{e.task} · integrated gradients, {e.steps} steps, baseline [{e.baseline.upper()}]</p>",
             f"<p class=text>{html.escape(e.text)}"
             + (f"<br>{html.escape(e.text_pair)}" if e.text_pair else "") + "</p>"]
    if "label" in e.prediction:
        probabilities = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in e.prediction["probabilities"].items())
        parts.append(f"<p>prediction: <b>{html.escape(e.prediction['label'])}</b> ({probabilities})</p>")
    elif "score" in e.prediction:
        parts.append(f"<p>prediction: score <b>{e.prediction['score']:.4f}</b></p>")
    else:
        tags = " ".join(f"{html.escape(t['word'])}/<b>{html.escape(t['tag'])}</b>" for t in e.prediction["tags"])
        parts.append(f"<p>prediction: {tags}</p>")
    if e.truncated:
        parts.append("<p><b>The text was cut to model.sequence_length; only the tokens shown were seen.</b></p>")
    parts.append("<h2>Word attributions</h2><p>red raises the explained output, blue lowers it</p>")
    for target in e.targets:
        scale = float(np.abs(target.word_attributions).max())
        words = " ".join(f"<span style='background:{_shade(v, scale)}' title='{v:+.4f}'>{html.escape(w)}</span>"
                         for w, v in zip(e.words, target.word_attributions))
        parts.append(f"<h3>{html.escape(_target_title(e, target))}</h3><p class=words>{words}</p>"
                     f"<p class=small>completeness: |Σ attributions − (F(x) − F(x'))| = "
                     f"{target.completeness_error:.2g}</p>")
    parts.append("<img src='attributions.png' alt='word attributions'>")
    rows = "".join(f"<tr><td>{html.escape(w)}</td>" + "".join(f"<td>{t.word_attributions[i]:+.4f}</td>"
                                                             for t in e.targets) + "</tr>"
                   for i, w in enumerate(e.words))
    heads = "".join(f"<th>{html.escape(t.label if t.word is None else e.words[t.word] + ' → ' + t.label)}</th>"
                    for t in e.targets)
    parts.append(f"<table><tr><th>word</th>{heads}</tr>{rows}</table>")
    parts.append(f"<h2>Attention</h2><p>{e.attention.shape[0]} layers × {e.attention.shape[1]} heads; each row "
                 "(query token) sums to 1 over the columns (key tokens)</p>")
    parts.extend(f"<img src='{name}' alt='attention of layer {layer}'>" for layer, name in enumerate(attention_files))
    style = ("body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
             ".words{font-size:1.3em;line-height:2}.words span{padding:0.1em 0.2em;border-radius:0.2em}"
             ".small{font-size:0.85em;color:#555}img{max-width:100%;display:block;margin:1em 0}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.5em;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tfsft explain</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_explanation(explanation, out_dir: Path) -> dict:
    """Writes the report files into `out_dir`; returns their paths by kind (html, json, attributions, attention)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_attributions(explanation, out_dir / "attributions.png")
    attention_files = []
    for layer, maps in enumerate(explanation.attention):
        name = f"attention_layer_{layer}.png"
        plot_attention_layer(maps, explanation.tokens, layer, out_dir / name)
        attention_files.append(name)
    (out_dir / "explanation.json").write_text(json.dumps(explanation.to_json(), ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    (out_dir / "explanation.html").write_text(_html(explanation, attention_files), encoding="utf-8")
    return {"html": out_dir / "explanation.html", "json": out_dir / "explanation.json",
            "attributions": out_dir / "attributions.png", "attention": [out_dir / n for n in attention_files]}
