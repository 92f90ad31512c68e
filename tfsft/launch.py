"""`tfsft launch --workers N CONFIG`: multi-worker training on this machine, to try it out.

Starts N processes of `tfsft train CONFIG --set train.strategy=multi_worker`,
each with the `TF_CONFIG` it would have on its own machine: the cluster (N
workers on free 127.0.0.1 ports) and its index; worker 0 is the chief. Their
output is relayed line by line, prefixed `[worker i]`. When a worker fails the
others are stopped (MultiWorkerMirroredStrategy cannot go on without it) and
the exit status is the failed worker's; started again, the run resumes from
its last backup.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` TCP ports that are free now (another process may still take one before a worker binds it)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(workers: int, host: str = "127.0.0.1") -> list[str]:
    """The `TF_CONFIG` value of each worker of a local cluster, e.g.
    `{"cluster": {"worker": ["127.0.0.1:41231", "127.0.0.1:41232"]}, "task": {"type": "worker", "index": 1}}`."""
    cluster = {"worker": [f"{host}:{port}" for port in free_ports(workers, host)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(workers)]


class Workers:
    """Running worker processes whose output is relayed to `out`, each line prefixed `[worker i] `.

    Args:
        commands: one command line per worker (worker i gets the i-th `TF_CONFIG`).
        out: where the output goes.
    """

    def __init__(self, commands: Sequence[Sequence[str]], out: IO[str] | None = None):
        self.out = out or sys.stdout
        self.processes: list[subprocess.Popen] = []
        self._relays: list[threading.Thread] = []
        for index, (command, tf_config) in enumerate(zip(commands, tf_configs(len(commands)))):
            env = {**os.environ, "TF_CONFIG": tf_config, "PYTHONUNBUFFERED": "1"}  # lines as they are printed
            process = subprocess.Popen(list(command), env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            relay = threading.Thread(target=self._relay, args=(process.stdout, f"[worker {index}] "), daemon=True)
            relay.start()
            self.processes.append(process)
            self._relays.append(relay)

    def _relay(self, stream: IO[str], prefix: str) -> None:
        for line in stream:
            self.out.write(prefix + line)
            self.out.flush()

    def wait(self, poll_seconds: float = 0.2) -> int:
        """Waits until all workers have ended; stops the others as soon as one fails.

        Returns:
            0, or the exit status of the first worker seen failing.
        """
        status = 0
        while any(p.poll() is None for p in self.processes):
            failed = [p.returncode for p in self.processes if p.returncode not in (None, 0)]
            if failed:
                status = failed[0]
                self.stop()
                break
            time.sleep(poll_seconds)
        for relay in self._relays:
            relay.join()
        return status or next((p.returncode for p in self.processes if p.returncode), 0)

    def stop(self) -> None:
        """Terminates the workers still running and waits for them."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            process.wait()


def train_command(config: str, overrides: Sequence[str] = (), export: bool = False, verbose: bool = False) -> list[str]:
    """`tfsft train CONFIG --set ... --set train.strategy=multi_worker [--export]` in this Python."""
    command = [sys.executable, "-m", "tfsft.cli", "train", str(config)]
    for assignment in [*overrides, "train.strategy=multi_worker"]:
        command += ["--set", assignment]
    return command + ["--export"] * export + ["--verbose"] * verbose


def launch(config: str, workers: int, overrides: Sequence[str] = (), export: bool = False,
           verbose: bool = False) -> int:
    """Trains `config` with `workers` local workers (the chief exports with `export`); returns the exit status."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1. Received: {workers}")
    running = Workers([train_command(config, overrides, export, verbose)] * workers)
    try:
        return running.wait()
    except KeyboardInterrupt:
        running.stop()
        raise
