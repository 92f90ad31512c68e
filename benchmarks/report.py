"""From repeated measurements to medians, same-run ratios against targets, and Markdown.

Every comparison is a ratio of two measurements taken in the *same repeat*
(`run.py` interleaves A B C A B C ...), and the reported ratio is the median
over repeats — so a load spike that slows one repeat slows both sides of its
ratio, and a noisy machine still gives a fair answer.

Standard library only (tested without TensorFlow or PyTorch).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from flops import model_flops_per_s

PEAK_KEYS = {"mixed_bfloat16": "bf16_peak_flops_per_s", "bf16": "bf16_peak_flops_per_s",
             "float32": "fp32_peak_flops_per_s", "fp32": "fp32_peak_flops_per_s"}


def peak_for(result: dict, peak: dict) -> Optional[float]:
    """The measured matmul peak at the precision a training run computed in (None if not measured)."""
    key = PEAK_KEYS.get(result.get("precision", ""))
    return peak.get(key) if key else None


def add_mfu(repeat: dict[str, dict]) -> None:
    """Adds `mfu` (real tokens) and `mfu_all_positions` (padding included) to each training result.

    Uses the `matmul_peak` result of the same repeat at the run's precision.
    """
    peak = repeat.get("matmul_peak")
    if peak is None:
        return
    for result in repeat.values():
        if "mean_padded_length" not in result:
            continue
        flops_peak = peak_for(result, peak)
        if flops_peak:
            result["mfu"] = model_flops_per_s(result) / flops_peak
            result["mfu_all_positions"] = model_flops_per_s(result, "padded_tokens_per_s") / flops_peak


@dataclass(frozen=True)
class Comparison:
    """`numerator(repeat) / denominator(repeat)` per repeat; the median is reported against `target`."""

    label: str
    numerator: Callable[[dict], float]
    denominator: Callable[[dict], float]
    target: Optional[float] = None  # the ratio must be ≥ target; None: shown for information
    percent: bool = False  # show as a percentage (MFU)
    peer: Optional[Callable[[dict], str]] = None  # names the denominator's measurement in each repeat


def _metric(name: str, key: str) -> Callable[[dict], float]:
    return lambda repeat: repeat[name][key]


def _inverse(name: str, key: str) -> Callable[[dict], float]:
    return lambda repeat: 1.0 / repeat[name][key]


HF_TRAIN = ("hf_train_bf16", "hf_train_bf16_grouped", "hf_train_bf16_grouped_compiled")


def fastest(names: tuple[str, ...], key: str) -> Callable[[dict], str]:
    """repeat → the one of `names` with the highest `key` in that repeat (KeyError if none of them ran)."""
    def pick(repeat: dict) -> str:
        measured = [name for name in names if name in repeat]
        if not measured:
            raise KeyError(f"none of {', '.join(names)} measured")
        return max(measured, key=lambda name: repeat[name][key])

    return pick


fastest_hf_train = fastest(HF_TRAIN, "examples_per_s")  # the Hugging Face training variant with the most examples/s


def hf_generate(batch: int) -> tuple[str, ...]:
    """The Hugging Face `generate` variants at `batch` (run.py's `HF_GENERATE_VARIANTS`)."""
    return tuple(f"{name}_b{batch}" for name in ("generate_hf", "generate_hf_bf16", "generate_hf_static_compiled"))


fastest_hf_generate = {batch: fastest(hf_generate(batch), "tokens_per_s") for batch in (1, 8)}


COMPARISONS = [
    Comparison("training examples/s: tfsft ÷ HF Transformers + PyTorch (bf16 autocast, dynamic padding)",
               _metric("tfsft_train", "examples_per_s"), _metric("hf_train_bf16", "examples_per_s"), 1.3),
    Comparison("training examples/s: tfsft ÷ the fastest HF Transformers + PyTorch variant of the repeat "
               "(± group_by_length, ± torch.compile)",
               _metric("tfsft_train", "examples_per_s"),
               lambda r: r[fastest_hf_train(r)]["examples_per_s"], 1.5, peer=fastest_hf_train),
    Comparison("training examples/s: tfsft ÷ plain KerasHub recipe (float32)",
               _metric("tfsft_train", "examples_per_s"), _metric("kerashub_train_fp32", "examples_per_s"), 3.0),
    Comparison("training examples/s: tfsft ÷ plain KerasHub recipe (mixed_bfloat16)",
               _metric("tfsft_train", "examples_per_s"), _metric("kerashub_train_bf16", "examples_per_s")),
    Comparison("MFU of tfsft training (real tokens) at its precision's measured matmul peak",
               lambda r: model_flops_per_s(r["tfsft_train"]),
               lambda r: peak_for(r["tfsft_train"], r["matmul_peak"]), 0.35, percent=True),
    Comparison("evaluation ÷ training examples/s (tfsft evaluate's forward passes on SST-2 dev ÷ tfsft training)",
               _metric("evaluate_tfsft", "examples_per_s"), _metric("tfsft_train", "examples_per_s"), 3.0),
    Comparison("evaluation ÷ training examples per CPU second (the same, counting the process's CPU time)",
               _metric("evaluate_tfsft", "examples_per_cpu_s"), _metric("tfsft_train", "examples_per_cpu_s"), 3.0),
    Comparison("evaluation ÷ training examples/s on training rows (2,000 SST-2 training phrases, as long as "
               "training's, ÷ tfsft training)",
               _metric("evaluate_tfsft_train_rows", "examples_per_s"), _metric("tfsft_train", "examples_per_s"), 3.0),
    Comparison("evaluation examples/s: tfsft evaluate ÷ model.predict on batches in file order (before)",
               _metric("evaluate_tfsft", "examples_per_s"), _metric("evaluate_keras_predict", "examples_per_s")),
    Comparison("serving batch 32 examples/s: SavedModel (strings in) ÷ Keras model (token ids in)",
               _metric("serving_savedmodel", "batch32_examples_per_s"),
               _metric("serving_keras", "batch32_examples_per_s"), 0.8),
    Comparison("serving batch 1 speed (1/p50): SavedModel (strings in) ÷ Keras model (token ids in)",
               _inverse("serving_savedmodel", "p50_ms"), _inverse("serving_keras", "p50_ms"), 0.8),
    Comparison("input pipeline examples/s: tfsft tf.data ÷ HF tokenizers (Rust)",
               _metric("pipeline_tfsft", "examples_per_s"), _metric("pipeline_hf", "examples_per_s")),
    *(Comparison(f"generation tokens/s at batch {batch} (SmolLM2-135M, 128 greedy tokens): tfsft SavedModel ÷ the "
                 f"fastest HF Transformers generate variant of the repeat (float32, bfloat16, static cache + compile)",
                 _metric(f"generate_tfsft_b{batch}", "tokens_per_s"),
                 lambda r, pick=fastest_hf_generate[batch]: r[pick(r)]["tokens_per_s"], 1.0,
                 peer=fastest_hf_generate[batch]) for batch in (1, 8)),
    Comparison("generation tokens/s at batch 1: tfsft SavedModel ÷ llama.cpp on the same GGUF file (CPU reference)",
               _metric("generate_tfsft_b1", "tokens_per_s"), _metric("generate_llamacpp_b1", "tokens_per_s")),
]


def same_repeat_ratios(comparison: Comparison, repeats: list[dict[str, dict]]) -> list[tuple[dict, float]]:
    """(repeat, ratio) for every repeat where both sides were measured."""
    pairs = []
    for repeat in repeats:
        try:
            numerator, denominator = comparison.numerator(repeat), comparison.denominator(repeat)
        except KeyError:
            continue
        if numerator is not None and denominator:
            pairs.append((repeat, numerator / denominator))
    return pairs


def ratio_median(comparison: Comparison, repeats: list[dict[str, dict]]) -> tuple[Optional[float], list[float]]:
    """(median, per-repeat ratios) over the repeats where both sides were measured."""
    ratios = [ratio for _, ratio in same_repeat_ratios(comparison, repeats)]
    return (statistics.median(ratios) if ratios else None), ratios


def medians(repeats: list[dict[str, dict]]) -> dict[str, dict]:
    """Per measurement, the median of every numeric field over the repeats (other fields: the first seen)."""
    values: dict[str, dict[str, list]] = {}
    for repeat in repeats:
        for name, result in repeat.items():
            for key, value in result.items():
                values.setdefault(name, {}).setdefault(key, []).append(value)
    out = {}
    for name, fields in values.items():
        out[name] = {"repeats": max(len(v) for v in fields.values())}
        for key, seen in fields.items():
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
            out[name][key] = statistics.median(seen) if numeric else seen[0]
    return out


def summarize(repeats: list[dict[str, dict]], failures: list[dict], machine: dict, settings: dict) -> dict:
    """Everything `latest.json` holds: machine, settings, raw repeats, medians and comparisons."""
    for repeat in repeats:
        add_mfu(repeat)
    comparisons = []
    for comparison in COMPARISONS:
        median, ratios = ratio_median(comparison, repeats)
        if median is None:
            continue
        entry = {
            "label": comparison.label, "ratio": median, "per_repeat": ratios, "target": comparison.target,
            "met": None if comparison.target is None else median >= comparison.target,
            "percent": comparison.percent,
        }
        if comparison.peer is not None:  # which measurement each repeat's ratio was taken against
            entry["peers"] = [comparison.peer(repeat) for repeat, _ in same_repeat_ratios(comparison, repeats)]
        comparisons.append(entry)
    return {"machine": machine, "settings": settings, "comparisons": comparisons,
            "medians": medians(repeats), "repeats": repeats, "failures": failures}


def _ratio(value: float, percent: bool) -> str:
    return f"{100 * value:.1f} %" if percent else f"{value:.2f}×"


TABLES = [
    ("Training throughput (SST-2, MiniLM-L6, batch 32)",
     ["tfsft_train", *HF_TRAIN, "kerashub_train_fp32", "kerashub_train_bf16"],
     [("precision", "precision", None), ("examples/s", "examples_per_s", 1), ("examples/CPU-s", "examples_per_cpu_s", 1),
      ("real tokens/s", "real_tokens_per_s", 0),
      ("mean real length", "mean_real_length", 1), ("mean padded length", "mean_padded_length", 1),
      ("MFU (real tokens)", "mfu", "%"), ("MFU (all positions)", "mfu_all_positions", "%"),
      ("timed steps", "steps", 0), ("torch.compile", "compiled", None)]),
    ("Matmul peak (TensorFlow, n × n)",
     ["matmul_peak"],
     [("n", "size", 0), ("fp32 TFLOP/s", "fp32_peak_flops_per_s", "T"), ("bf16 TFLOP/s", "bf16_peak_flops_per_s", "T")]),
    ("Input pipeline (strings → padded batches of 32)",
     ["pipeline_tfsft", "pipeline_hf"],
     [("examples/s", "examples_per_s", 0), ("mean real length", "mean_real_length", 2), ("examples", "examples", 0)]),
    ("Evaluation (SST-2 dev, 872 sentences; train_rows: 2,000 training phrases)",
     ["evaluate_tfsft", "evaluate_tfsft_train_rows", "evaluate_keras_predict"],
     [("examples/s", "examples_per_s", 1), ("examples/CPU-s", "examples_per_cpu_s", 1),
      ("first pass (traces) examples/s", "first_pass_examples_per_s", 1),
      ("examples", "examples", 0), ("batch size", "batch_size", 0), ("mean real length", "mean_real_length", 1),
      ("passes", "passes", 0)]),
    ("Serving (SST-2 dev sentences)",
     ["serving_savedmodel", "serving_keras"],
     [("p50 ms (batch 1)", "p50_ms", 2), ("p99 ms (batch 1)", "p99_ms", 2),
      ("examples/s (batch 32)", "batch32_examples_per_s", 1), ("requests", "requests", 0)]),
    ("Generation (SmolLM2-135M-Instruct, greedy, exactly 128 new tokens, prompt processing included)",
     [f"generate_tfsft_b{b}" for b in (1, 8)] + [*hf_generate(1), *hf_generate(8), "generate_llamacpp_b1"],
     [("batch", "batch", 0), ("dtype", "dtype", None), ("tokens/s", "tokens_per_s", 1),
      ("s per call", "seconds_per_call", 2), ("tokens/s after the prompt", "generation_tokens_per_s", 1),
      ("prompt tokens", "prompt_tokens", 0), ("new tokens", "new_tokens", 0),
      ("load at start", "load_average_start", 1), ("load at end", "load_average_end", 1)]),
]


def _cell(result: dict, key: str, digits) -> str:
    value = result.get(key)
    if value is None:
        return "—"
    if digits == "%":
        return f"{100 * value:.1f} %"
    if digits == "T":
        return f"{value / 1e12:.3f}"
    if digits is None:
        return str(value)
    return f"{value:,.{digits}f}"


def markdown(summary: dict) -> str:
    """The results as Markdown: machine, comparisons against targets, one table per kind."""
    machine, settings = summary["machine"], summary["settings"]
    lines = [f"# tfsft benchmarks — {machine.get('date', '')}", ""]
    done = settings.get("repeats_done", settings.get("repeats"))
    lines.append(f"Command: `{settings.get('command', '')}` · repeats: {done} of {settings.get('repeats')} "
                 f"(interleaved; every number is the median over repeats, every ratio the median of "
                 f"same-repeat ratios)")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    for key, value in machine.items():
        lines.append(f"| {key} | {value} |")
    lines += ["", "## Comparisons", "", "| comparison | ratio | target | met | per repeat |", "|---|---:|---:|:-:|---|"]
    for c in summary["comparisons"]:
        target = "—" if c["target"] is None else f"≥ {_ratio(c['target'], c['percent'])}"
        met = "—" if c["met"] is None else ("yes" if c["met"] else "**no**")
        peers = c.get("peers", [None] * len(c["per_repeat"]))
        per_repeat = ", ".join(_ratio(r, c["percent"]) + (f" ({peer})" if peer else "")
                               for r, peer in zip(c["per_repeat"], peers))
        lines.append(f"| {c['label']} | {_ratio(c['ratio'], c['percent'])} | {target} | {met} | {per_repeat} |")
    for title, names, columns in TABLES:
        present = [n for n in names if n in summary["medians"]]
        if not present:
            continue
        lines += ["", f"## {title}", "", "| run | " + " | ".join(h for h, _, _ in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for name in present:
            result = summary["medians"][name]
            lines.append(f"| {name} | " + " | ".join(_cell(result, k, d) for _, k, d in columns) + " |")
    if summary["failures"]:
        lines += ["", "## Failures", ""]
        for failure in summary["failures"]:
            lines.append(f"- repeat {failure['repeat']}, {failure['name']}: {failure['error']}")
    return "\n".join(lines) + "\n"


def write(summary: dict, folder: Path, stem: str = "latest") -> tuple[Path, Path]:
    """Writes `<stem>.json` and `<stem>.md` into `folder`; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(summary), encoding="utf-8")
    return json_path, md_path
