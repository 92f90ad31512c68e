"""The export's op check: TF core ops and TF Serving's TF Text ops pass; anything else fails, named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tfsft.serving.ops import TF_TEXT_SERVING_OPS, UnservableOpError, check_serving_ops, graph_ops, saved_model_proto


def save(module: tf.Module, path) -> str:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


class Echo(tf.Module):
    def __init__(self, python: bool):
        super().__init__()
        body = (lambda t: tf.py_function(tf.strings.upper, [t], tf.string)) if python else tf.strings.upper
        self.serve = tf.function(lambda text: {"out": body(text)}, input_signature=[tf.TensorSpec([None], tf.string)])


def test_core_ops_pass_and_py_function_fails_by_name(tmp_path):
    check_serving_ops(save(Echo(python=False), tmp_path / "core"))
    with pytest.raises(UnservableOpError, match=r"op 'EagerPyFunc' \(in function .*\) cannot run in TF Serving: "
                                                r"it calls back into Python"):
        check_serving_ops(save(Echo(python=True), tmp_path / "python"))


def test_an_op_of_another_library_fails_by_name(tmp_path):
    path = save(Echo(python=False), tmp_path / "custom")
    proto = saved_model_proto(path)
    node = next(n for f in proto.meta_graphs[0].graph_def.library.function for n in f.node_def
                if n.op == "StringUpper")
    node.op = "Addons>GeluFast"  # what an op of TensorFlow Addons looks like in a graph
    (tmp_path / "custom" / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(UnservableOpError, match="op 'Addons>GeluFast' .*tensorflow_text:ops_lib"):
        check_serving_ops(path)


@pytest.mark.parametrize("model", ["sst2/1", "pairs/1", "ner/1"])
def test_every_task_export_uses_serving_ops_only(exports, model):
    check_serving_ops(exports.root / model)
    text_ops = set(graph_ops(exports.root / model)) & TF_TEXT_SERVING_OPS
    assert {"FastWordpieceTokenizeWithOffsets", "CaseFoldUTF8"} <= text_ops  # the tokenizer is in the graph
    assert ("TFText>RoundRobinTrim" in text_ops) == (model != "ner/1")  # the packer's truncation: TF Serving >= 2.20


def test_the_list_is_what_the_installed_tf_text_registers():
    """TF_TEXT_SERVING_OPS came from TF Text 2.20's `ops_lib`; a TF Text that registers
    other ops needs the list (and the TF Serving it comes with) looked at again."""
    script = (
        "import json, tensorflow as tf\n"
        "from tensorflow.core.framework import op_def_pb2\n"
        "from tensorflow.python.client import pywrap_tf_session as c\n"
        "ops = lambda: {o.name for o in op_def_pb2.OpList.FromString(c.TF_GetBuffer(c.TF_GetAllOpList())).op}\n"
        "core = ops()\n"
        "import tensorflow_text\n"
        "print(json.dumps(sorted(ops() - core)))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert set(json.loads(out.stdout.splitlines()[-1])) == TF_TEXT_SERVING_OPS


def test_export_fails_naming_the_op_and_writes_no_version(exports, monkeypatch):
    from tfsft.export import export
    from tfsft.tasks.text_classification import TextClassificationTask

    outputs = TextClassificationTask.serving_outputs

    def with_python(self, logits):
        out = outputs(self, logits)
        return {**out, "label": tf.py_function(lambda x: x, [out["label"]], tf.string)}

    monkeypatch.setattr(TextClassificationTask, "serving_outputs", with_python)
    before = sorted(p.name for p in (exports.root / "sst2").iterdir())
    with pytest.raises(UnservableOpError, match="op 'EagerPyFunc'"):
        export(exports.runs[0], verify=False, log=lambda _: None)
    assert sorted(p.name for p in (exports.root / "sst2").iterdir()) == before == ["1", "2"]
