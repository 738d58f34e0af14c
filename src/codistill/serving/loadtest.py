"""Closed-loop load on a Triton endpoint: a bounded number of clients for a bounded time.

Each client sends one image per request, waits for the answer, and sends the next. Only
the small ``labels`` output is requested, as ``codistill infer`` does. Beside the latencies the
clients see, the server's own statistics say how long a request of the timed window waited in
its queue (the dynamic batcher's window) and how long the model took, on average. They count
every request the server answered for the model meanwhile, other clients' too.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tritonclient.utils import InferenceServerException

from codistill.serving.client import LabelsClient

MAX_CONCURRENCY = 64
MAX_DURATION_S = 600.0
WARMUP_REQUESTS = 2
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 60.0
MAX_ERRORS_IN_A_ROW = 20  # a client that fails this often in a row stops early
Row = TypeVar("Row")


@dataclass(frozen=True)
class LoadReport:
    """What one load run measured; latencies are None when no request succeeded."""

    model: str
    protocol: str
    dynamic_batching: bool | None  # None: as the endpoint was started, unknown here
    concurrency: int
    seconds: float
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    # per request, by the server's statistics (None where it does not answer them)
    server_queue_ms: float | None
    server_compute_ms: float | None
    first_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping."""
        return asdict(self)


@dataclass
class _ClientTally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def failed(self, err: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or str(err)


COMPUTE_PHASES = ("compute_input", "compute_infer", "compute_output")
# requests and nanoseconds per phase of a model's answered requests, as the server counts them
Totals = dict[str, tuple[int, int]]


def _phase_totals(url: str, protocol: str, model: str) -> Totals | None:
    """The server's phase totals for ``model``, or None where it does not answer them.

    A client of its own: the HTTP client may not be shared across threads.
    """
    client = None
    try:
        client = LabelsClient(url, protocol, REQUEST_TIMEOUT_S)
        return client.phase_totals(model)
    except (InferenceServerException, OSError):  # no statistics here, or not this model
        return None
    finally:
        if client is not None:
            client.close()


def _server_ms(
    before: Totals | None, after: Totals | None, phases: tuple[str, ...]
) -> float | None:
    """Mean milliseconds per request of ``phases`` between two snapshots (None without both)."""
    if before is None or after is None:
        return None

    def delta(phase: str, field: int) -> int:
        return after.get(phase, (0, 0))[field] - before.get(phase, (0, 0))[field]

    requests = delta("success", 0)
    ns = sum(delta(phase, 1) for phase in phases)
    if requests <= 0 or ns < 0:  # none answered, or a restarted server began counting anew
        return None
    return ns / requests / 1e6


def check_load_settings(concurrency: int, duration_s: float) -> None:
    """Raise ValueError unless the run is bounded: 1..64 clients, at most 600 s."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency: {concurrency} not within 1..{MAX_CONCURRENCY}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration: {duration_s:g} s not within (0, {MAX_DURATION_S:.0f}]")


def run_load(
    url: str,
    model: str,
    images: Sequence[np.ndarray],
    concurrency: int,
    duration_s: float,
    protocol: str = "http",
    dynamic_batching: bool | None = None,
) -> LoadReport:
    """Run ``concurrency`` closed-loop clients against ``model`` for ``duration_s`` seconds.

    Every client first sends ``WARMUP_REQUESTS`` untimed requests; a request still in
    flight at the deadline is finished and counted. A client stops early after
    ``MAX_ERRORS_IN_A_ROW`` failures in a row, so a dead endpoint is not flooded.
    """
    check_load_settings(concurrency, duration_s)
    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol: {protocol!r} is not one of http, grpc")
    if not images:
        raise ValueError("load test needs at least one image")
    tallies, elapsed, before = _closed_loop(url, model, images, concurrency, duration_s, protocol)
    after = _phase_totals(url, protocol, model)
    done = np.array([x for tally in tallies for x in tally.latencies]) * 1000
    percentiles = [float(v) for v in np.percentile(done, [50, 95, 99])] if done.size else [None] * 3
    return LoadReport(
        model=model,
        protocol=protocol,
        dynamic_batching=dynamic_batching,
        concurrency=concurrency,
        seconds=elapsed,
        requests=int(done.size),
        errors=sum(t.errors for t in tallies),
        images_per_s=done.size / elapsed,
        p50_ms=percentiles[0],
        p95_ms=percentiles[1],
        p99_ms=percentiles[2],
        mean_ms=float(done.mean()) if done.size else None,
        server_queue_ms=_server_ms(before, after, ("queue",)),
        server_compute_ms=_server_ms(before, after, COMPUTE_PHASES),
        first_error=next((t.first_error for t in tallies if t.first_error), None),
    )


def _closed_loop(
    url: str,
    model: str,
    images: Sequence[np.ndarray],
    concurrency: int,
    duration_s: float,
    protocol: str,
) -> tuple[list[_ClientTally], float, Totals | None]:
    """The clients' tallies, the timed window's seconds and the server's totals as it opened."""
    tallies = [_ClientTally() for _ in range(concurrency)]
    window: dict[str, Any] = {}

    def open_window() -> None:
        window["totals"] = _phase_totals(url, protocol, model)  # every warm-up is answered
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + duration_s

    # the last thread to arrive opens the timed window before any of them is released
    start_line = threading.Barrier(concurrency + 1, action=open_window)

    def client_loop(worker: int, tally: _ClientTally) -> None:
        client = None
        try:
            client = LabelsClient(url, protocol, REQUEST_TIMEOUT_S)
            for k in range(WARMUP_REQUESTS):
                client.labels(model, images[(worker + k) % len(images)])
        except Exception as err:  # reported, not raised: the run goes on
            tally.failed(err)
        try:
            start_line.wait(timeout=START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            return
        if client is None:
            return
        sent, in_a_row = 0, 0
        while time.perf_counter() < window["end"] and in_a_row < MAX_ERRORS_IN_A_ROW:
            image = images[(worker + sent * concurrency) % len(images)]
            sent += 1
            began = time.perf_counter()
            try:
                client.labels(model, image)
            except Exception as err:  # counted as an error
                tally.failed(err)
                in_a_row += 1
                continue
            tally.latencies.append(time.perf_counter() - began)
            in_a_row = 0
        client.close()

    threads = [
        threading.Thread(target=client_loop, args=(w, tallies[w]), daemon=True)
        for w in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        start_line.wait(timeout=START_TIMEOUT_S)
    except threading.BrokenBarrierError:
        raise TimeoutError(
            f"{model}: clients not warmed up after {START_TIMEOUT_S:.0f} s"
        ) from None
    for thread in threads:
        thread.join(timeout=duration_s + 2 * REQUEST_TIMEOUT_S)
    return tallies, time.perf_counter() - window["start"], window["totals"]


def local_server_rows(
    repository: Path,
    models: Sequence[str],
    concurrencies: Sequence[int],
    load: Callable[[str, str, int, bool], Row],
    protocol: str = "http",
    config_name: str = "cpu",
) -> list[Row]:
    """Start ``codistill serve`` with and then without dynamic batching; measure each row.

    A row is ``load(url, model, concurrency, batching)`` against the running server, for each
    model and concurrency, in that order.
    """
    from codistill.serving.process import serve_in_background

    rows = []
    with tempfile.TemporaryDirectory(prefix="codistill-loadtest-") as logs:
        for batching in (True, False):
            options = [f"--model-config-name={config_name}"]
            options += [] if batching else ["--no-dynamic-batching"]
            log = Path(logs) / f"serve-batching-{'on' if batching else 'off'}.log"
            with serve_in_background(repository, log, tuple(options)) as server:
                url = server.urls[protocol]
                for model in models:
                    for concurrency in concurrencies:
                        rows.append(load(url, model, concurrency, batching))
    return rows


def load_local_server(
    repository: Path,
    images: Sequence[np.ndarray],
    models: Sequence[str],
    concurrencies: Sequence[int],
    duration_s: float,
    protocol: str = "http",
    config_name: str = "cpu",
) -> list[LoadReport]:
    """Start ``codistill serve`` with and then without dynamic batching; load each model."""
    for concurrency in concurrencies:
        check_load_settings(concurrency, duration_s)

    def load(url: str, model: str, concurrency: int, batching: bool) -> LoadReport:
        return run_load(url, model, images, concurrency, duration_s, protocol, batching)

    return local_server_rows(repository, models, concurrencies, load, protocol, config_name)


def format_ms(value: float | None) -> str:
    """Milliseconds to one decimal, or "-" when no request finished to measure them."""
    return "-" if value is None else f"{value:.1f}"


def report_table(reports: Sequence[LoadReport]) -> list[list[str]]:
    """One row per report: model, batching, concurrency, throughput, latencies, errors."""
    batching = {True: "on", False: "off", None: "as served"}
    return [
        [
            r.model,
            batching[r.dynamic_batching],
            str(r.concurrency),
            str(r.requests),
            f"{r.images_per_s:.2f}",
            format_ms(r.p50_ms),
            format_ms(r.p95_ms),
            format_ms(r.p99_ms),
            format_ms(r.mean_ms),
            format_ms(r.server_queue_ms),
            format_ms(r.server_compute_ms),
            str(r.errors),
        ]
        for r in reports
    ]


TABLE_HEADER = [
    "model",
    "dynamic batching",
    "concurrency",
    "requests",
    "images/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "mean ms",
    "server queue ms",
    "server compute ms",
    "errors",
]
