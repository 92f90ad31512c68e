"""The Hugging Face training peers of the benchmark (benchmarks/): selection, names, the fastest-peer ratio.

Pure Python, no torch: the peers themselves run in `.venv-bench` (`make bench`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_hf_train  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402

HF_TRAIN = ["hf_train_bf16", "hf_train_bf16_grouped", "hf_train_bf16_grouped_compiled"]
FASTEST = next(c for c in report.COMPARISONS if c.peer is not None)


def test_hf_training_variants_are_in_the_train_and_hf_groups():
    assert [m.name for m in run.select(["train"]) if m.env == "hf"] == HF_TRAIN
    assert [m.name for m in run.select(["hf"])] == [*HF_TRAIN, "pipeline_hf"]
    assert [m.name for m in run.select(["hf_train_bf16_grouped"])] == ["hf_train_bf16_grouped"]
    args = run.parse_args(["--quick", "--only", "hf_train_bf16_grouped", "--only", "hf_train_bf16_grouped_compiled"])
    assert [m.name for m in run.select(args.only)] == HF_TRAIN[1:]


@pytest.mark.parametrize("quick", [False, True])
def test_each_variant_runs_the_script_with_the_flags_its_name_says(quick):
    for m in run.MEASUREMENTS:
        if m.name in HF_TRAIN:
            args = bench_hf_train.parse_args(m.quick_args if quick else m.args)
            assert bench_hf_train.result_name(args) == m.name
            assert args.group_by_length == ("grouped" in m.name) and args.compile == m.name.endswith("_compiled")


def test_training_is_compared_with_the_fastest_hf_variant_of_each_repeat(tmp_path):
    def hf(**rates):
        return {name: {"examples_per_s": rate} for name, rate in rates.items()}

    repeats = [
        {"tfsft_train": {"examples_per_s": 120.0},
         **hf(hf_train_bf16=40.0, hf_train_bf16_grouped=60.0, hf_train_bf16_grouped_compiled=50.0)},
        {"tfsft_train": {"examples_per_s": 30.0},  # a slow repeat: its ratio uses its own peers
         **hf(hf_train_bf16=10.0, hf_train_bf16_grouped=12.0, hf_train_bf16_grouped_compiled=20.0)},
        {"tfsft_train": {"examples_per_s": 100.0}, **hf(hf_train_bf16=50.0)},  # the other variants failed
        {"tfsft_train": {"examples_per_s": 100.0}},  # no peer measured: skipped
    ]
    assert report.ratio_median(FASTEST, repeats) == (2.0, [2.0, 1.5, 2.0])
    assert report.ratio_median(report.COMPARISONS[0], repeats) == (3.0, [3.0, 3.0, 2.0])  # against hf_train_bf16
    assert FASTEST.target == 1.5  # issue: ≥ 1.5× over the peer at its best

    summary = report.summarize(repeats, [], {"date": "2026-12-02"}, {"command": "benchmarks/run.py", "repeats": 4})
    entry = next(c for c in summary["comparisons"] if c["label"] == FASTEST.label)
    assert entry["peers"] == ["hf_train_bf16_grouped", "hf_train_bf16_grouped_compiled", "hf_train_bf16"]
    assert "peers" not in summary["comparisons"][0]
    _, md_path = report.write(summary, tmp_path)
    row = next(line for line in md_path.read_text().splitlines() if line.startswith(f"| {FASTEST.label} |"))
    assert row.endswith("| 2.00× | ≥ 1.50× | yes | 2.00× (hf_train_bf16_grouped), "
                        "1.50× (hf_train_bf16_grouped_compiled), 2.00× (hf_train_bf16) |")
    assert "| hf_train_bf16_grouped_compiled | — | 35.0 |" in md_path.read_text()  # the median of 50 and 20
