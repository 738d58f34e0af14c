"""Closed-loop load on a Triton endpoint: a bounded number of clients for a bounded time.

Each client sends one image per request, waits for the answer, and sends the next. Only
the small ``labels`` output is requested, as ``codistill infer`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_CONCURRENCY = 64
MAX_DURATION_S = 600.0
WARMUP_REQUESTS = 2
BARRIER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LoadReport:
    """What one load run measured."""

    model: str
    protocol: str
    dynamic_batching: bool | None  # None: as the endpoint was started, unknown here
    concurrency: int
    seconds: float
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping."""
        return asdict(self)


def _client_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol: {protocol!r} is not one of http, grpc")
    return module


def _request(module: Any, client: Any, model: str, image: np.ndarray) -> None:
    tensor = module.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    client.infer(model, [tensor], outputs=[module.InferRequestedOutput("labels")])


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
    flight at the deadline is finished and counted.
    """
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency: {concurrency} not within 1..{MAX_CONCURRENCY}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration: {duration_s} s not within (0, {MAX_DURATION_S:.0f}]")
    if not images:
        raise ValueError("load test needs at least one image")
    module = _client_module(protocol)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[list[str]] = [[] for _ in range(concurrency)]
    window: dict[str, float] = {}

    def open_window() -> None:
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + duration_s

    # the last thread to arrive opens the timed window before any of them is released
    start_line = threading.Barrier(concurrency + 1, action=open_window)

    def client_loop(worker: int) -> None:
        client = None
        try:
            client = module.InferenceServerClient(url)
            for k in range(WARMUP_REQUESTS):
                _request(module, client, model, images[(worker + k) % len(images)])
        except Exception as err:  # reported, not raised: the run goes on
            errors[worker].append(str(err))
        start_line.wait(timeout=BARRIER_TIMEOUT_S)
        if client is None:
            return
        sent = 0
        while time.perf_counter() < window["end"]:
            image = images[(worker + sent * concurrency) % len(images)]
            sent += 1
            began = time.perf_counter()
            try:
                _request(module, client, model, image)
            except Exception as err:  # counted as an error
                errors[worker].append(str(err))
                continue
            latencies[worker].append(time.perf_counter() - began)

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    start_line.wait(timeout=BARRIER_TIMEOUT_S)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["start"]
    done = np.array([x for worker in latencies for x in worker]) * 1000
    failed = [message for worker in errors for message in worker]
    p50, p95, p99 = np.percentile(done, [50, 95, 99]) if done.size else (np.nan,) * 3
    return LoadReport(
        model=model,
        protocol=protocol,
        dynamic_batching=dynamic_batching,
        concurrency=concurrency,
        seconds=elapsed,
        requests=int(done.size),
        errors=len(failed),
        images_per_s=done.size / elapsed,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        first_error=failed[0] if failed else None,
    )


def load_local_server(
    repository: Path,
    images: Sequence[np.ndarray],
    models: Sequence[str],
    concurrencies: Sequence[int],
    duration_s: float,
    protocol: str = "http",
    config_name: str = "cpu",
    log_dir: Path | None = None,
) -> list[LoadReport]:
    """Start ``codistill serve`` with and then without dynamic batching; load each model."""
    import tempfile

    from codistill.serving.process import serve_in_background

    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="codistill-loadtest-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for batching in (True, False):
        options = [f"--model-config-name={config_name}"]
        options += [] if batching else ["--no-dynamic-batching"]
        log = log_dir / f"serve-batching-{'on' if batching else 'off'}.log"
        with serve_in_background(repository, log, tuple(options)) as server:
            for model in models:
                for concurrency in concurrencies:
                    reports.append(
                        run_load(
                            server.urls[protocol],
                            model,
                            images,
                            concurrency,
                            duration_s,
                            protocol,
                            batching,
                        )
                    )
    return reports


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
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}",
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
    "errors",
]
