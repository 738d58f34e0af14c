"""``codistill serve`` as a child process on free loopback ports, for clients that need one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "serving "


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running ``codistill serve``: its URLs (host:port), process and log file."""

    urls: dict[str, str]
    process: subprocess.Popen
    log: Path


def _wait_until_ready(server: ServerProcess, timeout: float) -> None:
    import tritonclient.http as http

    client = http.InferenceServerClient(server.urls["http"])
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"codistill serve exited:\n{server.log.read_text()[-4000:]}")
        with contextlib.suppress(Exception):
            if client.is_server_ready() and READY_LINE in server.log.read_text():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Triton not ready after {timeout} s:\n{server.log.read_text()[-4000:]}"
            )
        time.sleep(0.5)


@contextlib.contextmanager
def serve_in_background(
    repository: Path, log: Path, options: tuple[str, ...] = (), timeout: float = 180.0
) -> Iterator[ServerProcess]:
    """Start ``codistill serve`` with ``options`` on free ports; SIGTERM it on exit."""
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    command = [sys.executable, "-m", "codistill.cli", "serve", "--repository", str(repository)]
    command += [f"--{name}-port={port}" for name, port in ports.items()]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [*command, *options],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: tritonserver goes with it
        )
        server = ServerProcess({n: f"127.0.0.1:{p}" for n, p in ports.items()}, process, log)
        try:
            _wait_until_ready(server, timeout)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
