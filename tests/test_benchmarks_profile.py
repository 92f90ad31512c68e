"""benchmarks/xplane_summary.py: op self-time from a real TensorFlow profile, nesting, op groups."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import xplane_summary  # noqa: E402


def test_self_time_counts_nested_time_in_the_innermost_op_only():
    # A function op [0, 100) running a MatMul [10, 50) and an Add [60, 70); a lone Cast [200, 205).
    events = [(0, 100, "PartitionedCall"), (10, 40, "MatMul"), (60, 10, "Add"), (200, 5, "Cast")]
    assert xplane_summary.self_times(events) == {"PartitionedCall": 50, "MatMul": 40, "Add": 10, "Cast": 5}


@pytest.mark.parametrize("op_type, group", [
    ("MatMul", "matmul"), ("_MklFusedMatMul", "matmul"), ("BatchMatMulV2", "matmul"), ("_MklSoftmax", "softmax"),
    ("ResourceApplyAdamWithAmsgrad", "optimizer update"), ("Cast", "cast"), ("AddV2", "other"),
])
def test_op_groups(op_type, group):
    assert xplane_summary.group_of(op_type) == group


def test_summary_of_a_real_profile_finds_the_matmul(tmp_path):
    @tf.function
    def step(x, w):
        return tf.reduce_sum(tf.matmul(x, w))

    x, w = tf.random.normal([256, 512]), tf.random.normal([512, 512])
    step(x, w)  # traced outside the profile
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(4):
        step(x, w)
    tf.profiler.experimental.stop()

    result = xplane_summary.summary(tmp_path, steps=4)
    ops = {o["op"]: o for o in result["ops"]}
    assert any(xplane_summary.group_of(op) == "matmul" for op in ops)
    assert result["groups"]["matmul"]["share"] > 0.5  # a 256×512×512 matmul outweighs one reduction
    assert abs(sum(g["share"] for g in result["groups"].values()) - 1) < 1e-9
    assert "| matmul |" in xplane_summary.markdown(result)


def test_a_folder_without_a_profile_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb under"):
        xplane_summary.summary(tmp_path, steps=1)
