"""A TFDS dataset that still has to be downloaded fails at once, and clearly, without internet."""

import time

import pytest

from tfsft.data import readers


def test_offline_download_fails_within_seconds(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(readers, "_resolves", lambda host: False)  # what an offline machine sees
    start = time.time()
    with pytest.raises(readers.DataError, match=r"tfds:conll2003\[train\]: cannot load \(ConnectionError: not "
                                                r"downloaded to .*storage.googleapis.com does not resolve\)\. "
                                                r"Offline\? Point data.data_dir or TFSFT_DATA_DIR at local CoNLL"):
        readers.load_tfds_split("conll2003", "train", str(tmp_path), ["tokens"], "local CoNLL files")
    assert time.time() - start < 10  # TFDS' own retries took 205 s here


def test_the_offline_check_is_a_name_lookup():
    assert readers._resolves("localhost")
    assert not readers._resolves("no-such-host.invalid")
