"""``codistill serve`` as a child process on free loopback ports, for clients that need one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "serving "
POLL_S = 0.5


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


def wait_until_ready(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    timeout: float,
    exited: Callable[[int], Exception],
    late: Callable[[], Exception],
    stop: threading.Event | None = None,
) -> None:
    """Poll ``ready`` until it answers True; raise ``exited(code)`` if ``process`` ends first.

    A probe that raises counts as not ready yet (nothing listens). Past ``timeout`` seconds
    raises ``late()``; a set ``stop`` returns at once.
    """
    deadline = time.monotonic() + timeout
    while stop is None or not stop.is_set():
        if process.poll() is not None:
            raise exited(process.returncode)
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise late()
        time.sleep(POLL_S)


def stop_process(
    process: subprocess.Popen, timeout: float, kill: Callable[[], None] | None = None
) -> None:
    """SIGTERM ``process`` and wait ``timeout`` s for it; then ``kill`` (default: SIGKILL it)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        (kill or process.kill)()
        process.wait(timeout=10)


@contextlib.contextmanager
def serve_in_background(
    repository: Path, log: Path, options: tuple[str, ...] = (), timeout: float = 180.0
) -> Iterator[ServerProcess]:
    """Start ``codistill serve`` with ``options`` on free ports; SIGTERM it on exit."""
    import tritonclient.http as http

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
        client = http.InferenceServerClient(server.urls["http"])

        def log_tail() -> str:
            return log.read_text()[-4000:]

        try:
            wait_until_ready(
                process,
                lambda: client.is_server_ready() and READY_LINE in log.read_text(),
                timeout,
                exited=lambda code: RuntimeError(f"codistill serve exited:\n{log_tail()}"),
                late=lambda: TimeoutError(f"Triton not ready after {timeout} s:\n{log_tail()}"),
            )
            yield server
        finally:
            client.close()
            stop_process(process, 60, kill=lambda: os.killpg(process.pid, signal.SIGKILL))
