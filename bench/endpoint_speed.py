"""The local Triton endpoint against direct ONNX Runtime on the same graph, in paired slices.

``infer_speed.py --triton`` calls it. Each row (student, dynamic batching, concurrency) loads
the endpoint in a few slices; right before and right after each slice, with the server idle,
a process of its own running plain ONNX Runtime on the same graph (``direct_rate.py``) times
one call per image. Each slice is thus set against the direct rate of its own phase of a
machine whose speed drifts (within a run it swung by more than 1.5x, within minutes).
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import numpy as np

from codistill.config import ROLES
from codistill.markdown import markdown_table
from codistill.serving.loadtest import (
    LoadReport,
    check_load_settings,
    format_ms,
    local_server_rows,
    run_load,
)
from codistill.serving.model_repository import served_name

SLICES = 5  # slices per row, each between two direct measurements
DIRECT_PASSES = 2  # passes over the images per direct measurement
DIRECT_TIMEOUT_S = 300.0  # the longest one direct measurement may take
HEADER = [
    "student",
    "dynamic batching",
    "concurrency",
    "p50 ms",
    "p95 ms",
    "images/s",
    "direct images/s",
    "ratio",
    "server queue ms",
    "server compute ms",
    "errors",
]
Slice = tuple[LoadReport, float]  # a slice's load, and direct seconds per image around it


@contextmanager
def direct_engine(graph: Path, images: np.ndarray) -> Iterator[Callable[[], float]]:
    """A function timing plain ONNX Runtime on ``graph`` (seconds per image) in its own process.

    A process that has stopped, or that does not answer within ``DIRECT_TIMEOUT_S``, is named
    with its graph in a RuntimeError (and killed if still running).
    """
    with tempfile.TemporaryDirectory(prefix="codistill-direct-") as folder:
        stored = Path(folder) / "images.npy"
        np.save(stored, images)
        script = Path(__file__).with_name("direct_rate.py")
        command = [sys.executable, str(script), str(graph), str(stored)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

        def stopped(why: str) -> RuntimeError:
            if process.poll() is None:
                process.kill()
            return RuntimeError(f"direct_rate.py on {graph} {why}: exit {process.wait()}")

        def seconds() -> float:
            try:
                process.stdin.write(f"{DIRECT_PASSES}\n")
                process.stdin.flush()
            except OSError:
                raise stopped("stopped") from None
            ready, _, _ = select.select([process.stdout], [], [], DIRECT_TIMEOUT_S)
            answer = process.stdout.readline() if ready else None
            if answer is None:
                raise stopped(f"did not answer within {DIRECT_TIMEOUT_S:g} s")
            if not answer:
                raise stopped("stopped")
            return json.loads(answer)["seconds_per_image"]

        try:
            yield seconds
        finally:
            with suppress(OSError):  # a process that stopped left a broken pipe
                process.stdin.close()
            process.stdout.close()
            try:
                process.wait(timeout=DIRECT_TIMEOUT_S)  # it ends at the end of its input
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def paired_slices(
    load: Callable[[float], LoadReport], direct: Callable[[], float], duration_s: float
) -> list[Slice]:
    """``SLICES`` loads of ``duration_s / SLICES`` each, with a direct measurement on both sides."""
    slices = []
    after = direct()
    for _ in range(SLICES):
        before = after
        report = load(duration_s / SLICES)
        after = direct()
        slices.append((report, (before + after) / 2))
    return slices


def row_cells(role: str, slices: Sequence[Slice]) -> list[str]:
    """One table row from a row's slices.

    images/s pools the slices (requests over seconds); direct images/s is what direct ONNX
    Runtime would do in the same seconds at each slice's own rate, so their quotient, the
    ratio, weighs each slice's endpoint rate against its own phase. Latencies and the
    server's times are the medians over the slices.
    """
    reports = [report for report, _ in slices]
    seconds = sum(r.seconds for r in reports)
    served = sum(r.requests for r in reports) / seconds
    direct = sum(r.seconds / per_image for r, per_image in slices) / seconds

    def median_ms(field: str) -> str:
        values = [getattr(r, field) for r in reports if getattr(r, field) is not None]
        return format_ms(statistics.median(values) if values else None)

    return [
        role,
        "on" if reports[0].dynamic_batching else "off",
        str(reports[0].concurrency),
        median_ms("p50_ms"),
        median_ms("p95_ms"),
        f"{served:.2f}",
        f"{direct:.2f}",
        f"{served / direct:.2f}",
        median_ms("server_queue_ms"),
        median_ms("server_compute_ms"),
        str(sum(r.errors for r in reports)),
    ]


def endpoint_rows(
    repository: Path,
    onnx_dir: Path,
    images: Sequence[np.ndarray],
    concurrencies: Sequence[int],
    duration_s: float,
) -> list[list[str]]:
    """Each student's endpoint rows, every slice set against direct ONNX Runtime around it."""
    for concurrency in concurrencies:
        check_load_settings(concurrency, duration_s)
    names = {served_name(role): role for role in ROLES}
    stacked = np.concatenate(images)
    with ExitStack() as stack:
        direct = {
            served_name(role): stack.enter_context(
                direct_engine(onnx_dir / f"{role}.onnx", stacked)
            )
            for role in ROLES
        }

        def row(url: str, model: str, concurrency: int, batching: bool) -> list[str]:
            def load(seconds: float) -> LoadReport:
                return run_load(url, model, images, concurrency, seconds, "http", batching)

            return row_cells(names[model], paired_slices(load, direct[model], duration_s))

        return local_server_rows(repository, list(names), concurrencies, row)


def endpoint_lines(
    repository: Path,
    onnx_dir: Path,
    images: Sequence[np.ndarray],
    concurrencies: Sequence[int],
    duration_s: float,
) -> list[str]:
    """The endpoint section of the inference table: how it was measured, then the rows."""
    height, width = images[0].shape[1:3]
    rows = endpoint_rows(repository, onnx_dir, images, concurrencies, duration_s)
    return [
        "",
        "### Local Triton endpoint (`codistill serve`) against direct ONNX Runtime FP32",
        "",
        f"Closed-loop clients, one {height}x{width} image per request over HTTP, "
        f"{duration_s:g} s per row in {SLICES} slices. Before each slice's warm-up requests and "
        "after its timed window, the server idle, plain ONNX Runtime on the same graph times "
        "one call per image in a process of its own (`bench/direct_rate.py`: numpy and ONNX "
        f"Runtime only, the median of {DIRECT_PASSES} passes over the images); a slice's direct "
        "rate is the mean of the two. images/s pools the slices; direct images/s is what direct "
        "calls would do in the same seconds at each slice's rate, so the ratio (endpoint over "
        "direct) weighs each slice against its own phase of the machine's drifting speed. "
        "Latencies, server queue and compute (milliseconds per request by Triton's own "
        "statistics: the dynamic batcher's wait; the model's input, execution and output, with "
        "the Python backend's hand-over) are medians over the slices.",
        "",
        *markdown_table(HEADER, rows),
    ]
