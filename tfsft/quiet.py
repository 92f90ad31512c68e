"""TensorFlow's start-up notices, kept off stderr.

TensorFlow 2.21 writes these lines straight to file descriptor 2 (seen on a
2-core Intel CPU without a GPU): while it is imported, absl's "All log
messages before absl::InitializeLog() ..." banner, "oneDNN custom operations
are on", "Could not find cuda drivers" and the two-line CPU-feature advice;
later, once per process, "failed call to cuInit" and "oneDNN supports DT_INT64
only on platforms with AVX-512". The import-time lines ignore
`TF_CPP_MIN_LOG_LEVEL` (still printed at 3; tests/test_cli.py checks it), so
they are filtered out of the stream instead: inside `NoticeFilter`, fd 2 goes
through a pipe to a thread that drops those lines (keeping them in `HELD_BACK`)
and passes everything else on.

`import tfsft` imports TensorFlow inside a filter (unless TensorFlow is
already imported or `TF_CPP_MIN_LOG_LEVEL=0` asks for every line); the
`tfsft` command keeps one around the whole command unless `--verbose`.
"""

from __future__ import annotations

import os
import re
import sys
import threading

NOTICE = re.compile(
    rb"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|This TensorFlow binary is optimized|^To enable the following instructions:"
    rb"|failed call to cuInit|oneDNN supports DT_INT64 only on platforms with AVX-512"
)
HELD_BACK: list[str] = []  # the notices dropped so far, in order


class NoticeFilter:
    """A context in which lines written to fd 2 that match `NOTICE` are dropped (into `HELD_BACK`).

    Everything else reaches the real stderr as it is written, except that a
    line is passed on once it ends (at "\\n" or "\\r", so progress bars move).
    """

    def __enter__(self) -> "NoticeFilter":
        sys.stderr.flush()
        self._stderr = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._pump = threading.Thread(target=self._copy, args=(read_end,), name="tfsft-stderr", daemon=True)
        self._pump.start()
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._stderr, 2)  # closes the pipe's only write end: the thread reads to its end and stops
        self._pump.join()
        os.close(self._stderr)

    def _copy(self, read_end: int) -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
            self._write(lines)
        self._write([pending])
        os.close(read_end)

    def _write(self, lines: list[bytes]) -> None:
        kept = []
        for line in lines:
            if NOTICE.search(line):
                HELD_BACK.append(line.decode("utf-8", "replace").rstrip())
            else:
                kept.append(line)
        data = b"".join(kept)
        while data:
            data = data[os.write(self._stderr, data):]


def import_tensorflow() -> None:
    """Imports TensorFlow with its start-up notices held back (see the module doc)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow  # noqa: F401
        return
    with NoticeFilter():
        import tensorflow  # noqa: F401
