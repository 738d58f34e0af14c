"""``codistill serve`` (a real Triton server) on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from codistill.serving.process import serve_in_background

# The pixel budget of the shared test server: one 96x128 image.
TEST_MAX_PIXELS = 96 * 128
# The smallest warm-up the students take, so the test servers start quickly.
WARMUP_SIZE = [64, 96]


def served_repository(exported_students: Path, folder: Path) -> Path:
    """Publish the exported students into ``folder`` as a model repository (small warm-up)."""
    from codistill.config import parse_params
    from codistill.serving.model_repository import write_model_repository
    from tests.conftest import over_repo

    # a batching window of 2 ms, which the load test finds in the server's statistics
    settings = {"warmup_size": WARMUP_SIZE, "max_queue_delay_us": 2000}
    serving = parse_params(over_repo({"serving": settings}), "d").serving
    write_model_repository(exported_students, folder, serving, ("cnn", "vit"))
    return folder


@contextlib.contextmanager
def triton_server(
    repository: Path,
    log: Path,
    max_pixels: int,
    config_name: str = "cpu",
    batching: bool = True,
    max_logit_pixels: int | None = None,
) -> Iterator[dict]:
    """Start ``codistill serve`` on free loopback ports; yield its URLs and process.

    ``ready`` holds the server's Prometheus metrics as they were when it became ready.
    """
    options = (f"--max-pixels={max_pixels}", f"--model-config-name={config_name}")
    # by default the logits as large as any image, for tests that compare them
    options += (f"--max-logit-pixels={max_logit_pixels or max_pixels}",)
    options += () if batching else ("--no-dynamic-batching",)
    with serve_in_background(repository, log, options) as server:
        url = f"http://{server.urls['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            metrics = response.read().decode()
        yield {"urls": server.urls, "process": server.process, "log": server.log, "ready": metrics}


def group_pids(pgid: int) -> list[int]:
    """The live processes of the process group ``pgid``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(proc.name))
    return pids


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in the process group ``pgid``, in MiB."""
    total_kib = 0
    for pid in group_pids(pgid):
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:  # the process ended meanwhile
            continue
        total_kib += sum(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total_kib / 1024
