"""``codistill serve`` (a real Triton server) on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers.mlflow_server import free_port


@contextlib.contextmanager
def triton_server(
    repository: Path, log: Path, max_pixels: int, timeout: float = 180.0
) -> Iterator[dict]:
    """Start ``codistill serve`` on free loopback ports; yield its URLs and process."""
    import tritonclient.http as http

    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    handle = open(log, "w")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "codistill.cli", "serve", "--repository", str(repository)]
    command += [f"--{name}-port={port}" for name, port in ports.items()]
    command += [f"--max-pixels={max_pixels}"]
    process = subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    urls = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    try:
        client = http.InferenceServerClient(urls["http"])
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"codistill serve exited:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(Exception):
                if client.is_server_ready() and "serving " in log.read_text():
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Triton not ready after {timeout} s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(0.5)
        yield {"urls": urls, "process": process, "log": log}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        handle.close()
