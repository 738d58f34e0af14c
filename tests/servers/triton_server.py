"""``codistill serve`` (a real Triton server) on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from codistill.serving.process import serve_in_background


@contextlib.contextmanager
def triton_server(
    repository: Path, log: Path, max_pixels: int, config_name: str = "cpu", batching: bool = True
) -> Iterator[dict]:
    """Start ``codistill serve`` on free loopback ports; yield its URLs and process."""
    options = (f"--max-pixels={max_pixels}", f"--model-config-name={config_name}")
    options += () if batching else ("--no-dynamic-batching",)
    with serve_in_background(repository, log, options) as server:
        yield {"urls": server.urls, "process": server.process, "log": server.log}
