"""tfsft.export.predict on a SavedModel: rows in input order, keys in a stable order."""

import tensorflow as tf

from tfsft.export import predict

KEYS = ["zeta", "alpha", "mid", "beta", "omega", "kappa"]  # a reloaded signature returns its outputs in any order


class _Outputs(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {key: tf.fill(tf.shape(text), i) for i, key in enumerate(KEYS)}


def test_predict_rows_have_the_text_first_then_the_outputs_sorted(tmp_path):
    module = _Outputs()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    rows = list(predict(tmp_path / "1", ["a", "b"]))
    assert [list(row) for row in rows] == [["text", *sorted(KEYS)]] * 2
    assert rows[1] == {"text": "b", **{key: i for i, key in enumerate(KEYS)}}
