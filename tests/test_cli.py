"""The `tfsft` command's output: TensorFlow's start-up notices held back unless --verbose."""

import os
import subprocess
import sys

import pytest

from tests.conftest import tiny_text_config
from tfsft import quiet


def run_tfsft(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tfsft.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def notices(text: str) -> list[str]:
    return [line for line in text.splitlines() if quiet.NOTICE.search(line.encode())]


def test_tf_cpp_min_log_level_does_not_silence_the_import_notices():
    """Why tfsft filters the stream: even level 3 leaves TensorFlow's import-time lines on stderr."""
    proc = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert notices(proc.stderr), proc.stderr


def test_notice_filter_drops_notices_and_passes_everything_else(capfd):
    before = len(quiet.HELD_BACK)
    with quiet.NoticeFilter():
        os.write(2, b"I0000 00:00:17.1 1 port.cc:153] oneDNN custom operations are on. You may see\n"
                    b"a real warning\n\r 10%|#   |\r 20%|##  |")
    assert capfd.readouterr().err == "a real warning\n\r 10%|#   |\r 20%|##  |"  # progress bars pass at each \r
    assert quiet.HELD_BACK[before:] == ["I0000 00:00:17.1 1 port.cc:153] oneDNN custom operations are on. You may see"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_vocab):
    from tfsft.training import train

    return train(tiny_text_config(tmp_path_factory.mktemp("cli"), tiny_vocab, max_steps=2), log=lambda _: None).run_dir


def test_evaluate_prints_no_tensorflow_notices_and_verbose_brings_them_back(tiny_run):
    quiet_run = run_tfsft("evaluate", str(tiny_run))
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert not notices(quiet_run.stderr), quiet_run.stderr
    assert "ran out of data" not in quiet_run.stderr
    assert "accuracy" in quiet_run.stdout

    verbose = run_tfsft("evaluate", str(tiny_run), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert notices(verbose.stderr), verbose.stderr
