"""A real Triton server on this machine: nvidia-pytriton's bundled ``tritonserver``.

Every model of the published repository is served under its own name, with the tensors, data
types, batch size, dynamic batching and instances of its chosen configuration, by Triton's
Python backend running the ONNX graph with ONNX Runtime (``backend_repository``,
``triton_python_model``): the bundled server has no other backend. Images outside the sizes
the server accepts get a one-line 400 before their pixels are read.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codistill.input_size import min_native_side
from codistill.serving.backend_repository import (
    Limits,
    chosen_config,
    link_backends,
    server_binary,
    server_libraries,
    write_backend_model,
)
from codistill.serving.client import LabelsClient
from codistill.serving.errors import ServerError
from codistill.serving.front import RGB_BYTES, model_ranks, start_front
from codistill.serving.limits import DEFAULT_MAX_LOGIT_PIXELS, DEFAULT_MAX_PIXELS
from codistill.serving.process import free_port, stop_process, wait_until_ready
from codistill.serving.workspace import (
    ServerWorkspace,
    remove_stale_regions,
    remove_stale_workspaces,
)

START_TIMEOUT_S = 300.0
EXIT_TIMEOUT_S = 10
# Repository control, shared-memory registration, logging and tracing settings: refused to
# every client (the key that would unlock them is never shown).
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"


@dataclass(frozen=True)
class Ports:
    """Where the server listens."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def private_ports(public: Ports) -> Ports:
    """Free loopback ports for Triton's HTTP and gRPC behind the fronts, none of ``public``'s.

    The fronts bind the public ports after these are drawn, so a draw must not return one.
    """
    taken = {public.http, public.grpc, public.metrics}
    drawn: list[int] = []
    while len(drawn) < 2:
        port = free_port()
        if port not in taken:
            taken.add(port)
            drawn.append(port)
    return Ports(drawn[0], drawn[1], public.metrics)


def warmup_inputs(config: Any) -> list[dict[str, np.ndarray]]:
    """The requests of ``config.model_warmup`` as arrays (zero data), batch first."""
    from tritonclient.grpc import model_config_pb2 as pb
    from tritonclient.utils import triton_to_np_dtype

    requests = []
    for warmup in config.model_warmup:
        request = {}
        for name, spec in warmup.inputs.items():
            dtype = triton_to_np_dtype(pb.DataType.Name(spec.data_type).removeprefix("TYPE_"))
            request[name] = np.zeros((warmup.batch_size, *spec.dims), dtype=dtype)
        requests += [request] * max(warmup.count, 1)
    return requests


def _warm_through_server(
    url: str, model_dirs: list[Path], config_name: str, stop: threading.Event
) -> None:
    """Send each model's warm-up requests through the running server, end to end."""
    from tritonclient.utils import InferenceServerException

    client = LabelsClient(url, timeout_s=600.0)
    try:
        for model_dir in model_dirs:
            config = chosen_config(model_dir, config_name)
            for request in warmup_inputs(config):
                if stop.is_set():
                    return
                ((name, image),) = request.items()  # the students take one input
                try:
                    client.labels(config.name, image, name)
                except InferenceServerException as err:
                    raise WarmupError(
                        f"{config.name}: its warm-up request failed ({err.message()}); lower "
                        "serving.warmup_size or start with --no-warmup"
                    ) from None
    finally:
        client.close()


# Blocks this large or larger come from their own mapped pages, returned to the system when
# freed (glibc's M_MMAP_THRESHOLD; setting it also stops glibc from raising it).
MMAP_THRESHOLD_BYTES = 1 << 20
# How often ``codistill serve`` has restarted the server, for the models' restart gauge.
RESTARTS_ENV = "CODISTILL_SERVER_RESTARTS"


class WarmupError(RuntimeError):
    """A model's configured warm-up request is one the endpoint refuses."""


def require_free_ports(host: str, ports: Ports) -> None:
    """Raise ServerError naming the first of ``ports`` that something already listens on."""
    for name in ("http", "grpc", "metrics"):
        port = getattr(ports, name)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # as the server binds: a port a stopped server left in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
                raise ServerError(
                    f"address already in use: {host}:{port} (--{name}-port)"
                ) from None


def exit_cause(returncode: int) -> str:
    """A process's exit status in words: ``status 1`` or ``signal 6 (SIGABRT)``."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        return f"signal {-returncode} ({signal.Signals(-returncode).name})"
    except ValueError:
        return f"signal {-returncode}"


class RestartBudget:
    """How often a server that stops on its own is started again.

    At most ``limit`` restarts within ``window_s`` seconds: a server that cannot stay up ends
    ``codistill serve`` instead.
    """

    def __init__(self, limit: int = 3, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self.count = 0
        self._recent: list[float] = []

    def spend(self, cause: str) -> None:
        """Count one restart, or raise ServerError if the budget is spent."""
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < self.window_s] + [now]
        if len(self._recent) > self.limit:
            raise ServerError(
                f"tritonserver stopped ({cause}) {len(self._recent)} times within "
                f"{self.window_s:.0f} s; not restarting it again; its log is above"
            )
        self.count += 1


def _server_environment(restarts: int = 0) -> dict[str, str]:
    """The bundled server's libraries, and libpython for the Python backend's stub."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [str(server_libraries()), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
    return {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p),
        # the stub's interpreter finds this environment's packages (ONNX Runtime, numpy)
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # glibc serves large blocks from mapped pages, unmapped when freed: without a fixed
        # threshold it raises it after the first large image, and keeps what later ones used
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
        # the models publish it as the gauge codistill_server_restarts
        RESTARTS_ENV: str(restarts),
    }


# Run by a fresh interpreter in front of tritonserver: the kernel sends the server SIGTERM when
# ``codistill serve`` dies, even by SIGKILL (PR_SET_PDEATHSIG survives the exec). A launcher,
# not a ``preexec_fn``: Python code in a child forked beside the gRPC front's threads can abort
# in gRPC's fork handlers before the exec, and without one Popen starts the child by vfork.
# Python ignores SIGPIPE and SIGXFSZ at start-up; the server gets them back as a plain start
# leaves them.
_TIED_TO_PARENT = """
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # PR_SET_PDEATHSIG
    sys.exit(f"cannot tie the server to codistill serve: {os.strerror(ctypes.get_errno())}")
if os.getppid() != int(sys.argv[1]):
    sys.exit("codistill serve stopped before tritonserver started")
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execv(sys.argv[2], sys.argv[2:])
"""


def start_tied_to_this_process(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start ``command`` so that the kernel stops it when the calling thread ends (or dies)."""
    launcher = [sys.executable, "-I", "-S", "-c", _TIED_TO_PARENT, str(os.getpid())]
    return subprocess.Popen([*launcher, *command], env=env)


def _server_command(
    models: Path, backends: Path, host: str, ports: Ports, shm_prefix: str, server_id: str
) -> list[str]:
    key = secrets.token_hex(16)
    return [
        str(server_binary()),
        f"--id={server_id}",
        f"--model-repository={models}",
        f"--backend-directory={backends}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--http-address=127.0.0.1",  # behind the front, which listens on the public port
        f"--http-port={ports.http}",
        "--grpc-address=127.0.0.1",  # behind the gRPC front too
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.metrics}",
        f"--http-restricted-api={RESTRICTED_APIS}:codistill-admin={key}",
        f"--grpc-restricted-protocol={RESTRICTED_APIS}:codistill-admin={key}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        "--strict-readiness=true",
    ]


def _wait_until_ready(
    process: subprocess.Popen, url: str, server_id: str, stop: threading.Event
) -> None:
    """Return once our own server (not another one on the port) reports ready, or on ``stop``."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url)
    try:
        wait_until_ready(
            process,
            lambda: client.get_server_metadata()["name"] == server_id and client.is_server_ready(),
            START_TIMEOUT_S,
            exited=lambda code: ServerError(
                f"tritonserver stopped while starting ({exit_cause(code)}); its log is above"
            ),
            late=lambda: TimeoutError(f"tritonserver not ready after {START_TIMEOUT_S:.0f} s"),
            stop=stop,
        )
    finally:
        client.close()


def inference_scale(repository: Path) -> float:
    """The scale the graphs resize images by, from the repository's ``preprocessing.json``."""
    import json

    contract = repository / "preprocessing.json"
    return (
        float(json.loads(contract.read_text()).get("inference_scale", 1.0))
        if contract.is_file()
        else 1.0
    )


def serve(
    repository: str | Path,
    host: str = "127.0.0.1",
    ports: Ports = Ports(),
    config_name: str = "cpu",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dynamic_batching: bool = True,
    ready: Callable[[list[str], Path], None] | None = None,
    stop: threading.Event | None = None,
    warmup: bool = True,
    max_logit_pixels: int = DEFAULT_MAX_LOGIT_PIXELS,
) -> None:
    """Serve every model in ``repository`` until SIGTERM, SIGINT or ``stop`` is set.

    The server gets its own workspace (its model repository and backend links), removed on
    exit; ``ready`` is called with the served model names (with their graph files) and that
    workspace once every model answered its warm-up requests. A request over ``max_pixels``
    (images × height × width; ``max_logit_pixels`` if it asks for the logits) or with an image
    under the students' minimum side at the graphs' scale is refused.
    """
    repository = Path(repository)
    model_dirs = sorted(p for p in repository.iterdir() if (p / "configs").is_dir())
    if not model_dirs:
        raise FileNotFoundError(f"{repository}: no models; run the publish stage")
    require_free_ports(host, ports)
    os.umask(0o077)  # owner-only files for whatever the server writes
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for stale in remove_stale_workspaces():
        print(f"removed {stale}, the workspace of a server that is gone", flush=True)
    remove_stale_regions()
    limits = Limits(max_pixels, min_native_side(inference_scale(repository)), max_logit_pixels)
    workspace = ServerWorkspace()
    holder = workspace.folder
    process = front = grpc_front = None
    try:
        names = [
            write_backend_model(d, holder / "models", config_name, limits, dynamic_batching)
            for d in model_dirs
        ]
        backends = link_backends(holder / "backends")
        private = private_ports(ports)
        ranks = model_ranks(repository, config_name)
        budget = max_pixels * RGB_BYTES
        front, _ = start_front(host, ports.http, ("127.0.0.1", private.http), budget, ranks)
        from codistill.serving.grpc_front import start_grpc_front  # grpc: an edge library

        grpc_front = start_grpc_front(host, ports.grpc, ("127.0.0.1", private.grpc), budget, ranks)

        def start(restarts: int) -> subprocess.Popen | None:
            """A ready, warmed-up tritonserver (None if ``stop`` was set meanwhile)."""
            server_id = f"codistill-{secrets.token_hex(8)}"
            command = _server_command(
                holder / "models", backends, host, private, workspace.shm_prefix, server_id
            )
            started = start_tied_to_this_process(command, _server_environment(restarts))
            nonlocal process
            process = started
            _wait_until_ready(started, f"127.0.0.1:{private.http}", server_id, stop)
            if stop.is_set():
                return None
            workspace.owner_only()
            if warmup:
                _warm_through_server(f"{host}:{ports.http}", model_dirs, config_name, stop)
            return started

        if start(0) is None:
            return
        if ready is not None and not stop.is_set():
            ready(names, holder)
        restarts = RestartBudget()
        while not stop.wait(1.0):
            if process.poll() is None:
                continue
            while process.poll() is not None:  # until one stays up, or the budget is spent
                cause = exit_cause(process.returncode)
                restarts.spend(cause)
                print(f"tritonserver stopped ({cause}); restart {restarts.count}", flush=True)
                workspace.remove_regions()  # the dead server's; the next makes its own
                # a new private port: another process may have taken the old one meanwhile
                private = private_ports(ports)
                front.upstream = ("127.0.0.1", private.http)
                grpc_front.upstream = ("127.0.0.1", private.grpc)
                try:
                    if start(restarts.count) is None:
                        return
                except (ServerError, WarmupError):
                    if process.poll() is None:  # alive, yet refused: not a crash to retry
                        raise
            print(f"serving again after restart {restarts.count}", flush=True)
    finally:
        if grpc_front is not None:
            grpc_front.stop()
        if front is not None:
            front.shutdown()
            front.server_close()
        if process is not None:
            stop_process(process, EXIT_TIMEOUT_S + 20)
        workspace.close()
