"""The op check of every export: TF Serving runs only the ops it is built with.

TF Serving's model server links TensorFlow's core ops and, of the custom-op
libraries, TF Text's `ops_lib` (tensorflow/serving,
tensorflow_serving/model_servers/BUILD: `SUPPORTED_TENSORFLOW_OPS` holds
"@org_tensorflow_text//tensorflow_text:ops_lib" and TF Decision Forests'
inference ops, which tfsft never uses). Anything else, e.g. `tf.py_function`
(the `EagerPyFunc` op calls back into Python) or an op of another custom-op
library, fails when TF Serving loads the model; `check_serving_ops` fails the
export instead, naming the op.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

# TF Text's `ops_lib` at v2.20.0, the TF Text that TF Serving 2.20 builds with
# (tensorflow_serving/workspace.bzl: strip_prefix = "text-2.20.0"): the ops
# registered (REGISTER_OP, kOpName) by the sources of its 23 `*_cc` targets
# (tensorflow/text, tensorflow_text/BUILD), which are also exactly the ops the
# tensorflow-text 2.21 wheel's python/ops/_*.so and
# python/metrics/_text_similarity_metric_ops.so register.
TF_TEXT_SERVING_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
    "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap", "PhraseTokenize",
    "RegexSplitWithOffsets", "RougeL", "SentenceFragments", "SentenceFragmentsV2", "SentencepieceDetokenizeOp",
    "SentencepieceIdToStringOp", "SentencepieceOp", "SentencepieceStringToIdOp", "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets",
    "TFText>BoiseTagsToOffsets", "TFText>ByteSplitByOffsets", "TFText>ByteSplitWithOffsets",
    "TFText>FastSentencepieceDetokenize", "TFText>FastSentencepieceTokenize", "TFText>FastWordpieceDetokenize",
    "TFText>NgramsStringJoin", "TFText>OffsetsToBoiseTags", "TFText>PhraseDetokenize",
    "TFText>RoundRobinGenerateMasks", "TFText>RoundRobinTrim", "TFText>Utf8Binarize",
    "TFText>WhitespaceTokenizeWithOffsetsV2", "TokenizerFromLogits", "UnicodeScriptTokenizeWithOffsets",
    "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets",
})

# The round-robin truncation ops (`trimmer_ops`, used by KerasHub's
# MultiSegmentPacker in every BERT-style encoder) joined `ops_lib` in TF Text
# 2.13; TF Serving 2.13-2.19 built with TF Text 2.12.1, 2.20 with 2.20.0.
MIN_TF_SERVING = "2.20"

# Core ops that call back into the Python interpreter, which TF Serving does not have.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class UnservableOpError(RuntimeError):
    """The SavedModel uses an op that TF Serving does not have."""


def core_ops() -> frozenset[str]:
    """TensorFlow's own ops: those of `tf.raw_ops` (custom-op libraries never add to it)."""
    return frozenset(name for name in dir(tf.raw_ops) if not name.startswith("_"))


def saved_model_proto(saved_model: str | Path) -> saved_model_pb2.SavedModel:
    """The parsed `saved_model.pb` of a SavedModel folder."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model) / "saved_model.pb").read_bytes())
    return proto


def graph_ops(saved_model: str | Path) -> dict[str, str]:
    """Every op of a SavedModel → where it first appears ("graph" or a function name).

    Calls of functions of the graph's own library are not ops and are left out.
    """
    ops: dict[str, str] = {}
    for meta_graph in saved_model_proto(saved_model).meta_graphs:
        graph = meta_graph.graph_def
        functions = {f.signature.name for f in graph.library.function}
        for node in graph.node:
            ops.setdefault(node.op, "graph")
        for function in graph.library.function:
            for node in function.node_def:
                ops.setdefault(node.op, f"function {function.signature.name}")
        for name in functions:
            ops.pop(name, None)
    return ops


def check_serving_ops(saved_model: str | Path) -> None:
    """Raises `UnservableOpError` naming the first op TF Serving does not have."""
    allowed = (core_ops() - PYTHON_OPS) | TF_TEXT_SERVING_OPS
    for op, where in sorted(graph_ops(saved_model).items()):
        if op in allowed:
            continue
        why = ("it calls back into Python (tf.py_function / tf.numpy_function), which TF Serving does not have"
               if op in PYTHON_OPS else
               "TF Serving has only TensorFlow's core ops and the TF Text ops of tensorflow_text:ops_lib")
        raise UnservableOpError(f"{saved_model}: op {op!r} (in {where}) cannot run in TF Serving: {why}")
