"""A real Triton server on this machine (nvidia-pytriton's bundled ``tritonserver``).

Each model of the repository is bound under its own name with the tensors, data types and
batching of its ``config.pbtxt``, read back through ``tritonclient``'s ``model_config_pb2``;
ONNX Runtime runs the graph inside the bound function (the bundled server has only the
Python backend).
"""

from __future__ import annotations

import os
import shutil
import signal
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codistill.serving.limits import DEFAULT_MAX_PIXELS
from codistill.serving.model_repository import MODEL_FILE, VERSION
from codistill.serving.triton_config import read_config

# Triton data types (model_config_pb2.DataType names) to numpy.
NUMPY_TYPES = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
}


WORKSPACE_PREFIX = "codistill-triton-"
PID_FILE = "server.pid"


@dataclass(frozen=True)
class Ports:
    """Where the server listens."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _tensors(specs: Any) -> list[Any]:
    from pytriton.model_config import Tensor
    from tritonclient.grpc import model_config_pb2 as pb

    return [
        Tensor(name=s.name, dtype=NUMPY_TYPES[pb.DataType.Name(s.data_type)], shape=tuple(s.dims))
        for s in specs
    ]


def warmup_inputs(config: Any) -> list[dict[str, np.ndarray]]:
    """The requests of ``config.model_warmup`` as arrays (zero data), batch first."""
    from tritonclient.grpc import model_config_pb2 as pb

    requests = []
    for warmup in config.model_warmup:
        request = {}
        for name, spec in warmup.inputs.items():
            dtype = NUMPY_TYPES[pb.DataType.Name(spec.data_type)]
            request[name] = np.zeros((warmup.batch_size, *spec.dims), dtype=dtype)
        requests += [request] * max(warmup.count, 1)
    return requests


def spatial_axes(config: Any) -> tuple[int, ...]:
    """The batched array's axes of the image's height and width: the input's dynamic dims."""
    return tuple(1 + i for i, size in enumerate(config.input[0].dims) if size == -1)


def _infer_function(
    onnx_path: Path,
    input_name: str,
    axes: tuple[int, ...],
    max_pixels: int,
    warmup: list[dict[str, np.ndarray]],
) -> Callable[..., dict[str, np.ndarray]]:
    import onnxruntime as ort
    from pytriton.decorators import batch

    options = ort.SessionOptions()
    # Without the arena, memory a large image needed goes back once it is answered.
    options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    for request in warmup:  # as Triton does with model_warmup, before the model is ready
        session.run(names, request)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        image = inputs[input_name]
        height, width = (image.shape[axis] for axis in axes)
        if height * width > max_pixels:
            raise ValueError(
                f"{input_name}: {height}x{width} is over the "
                f"{max_pixels}-pixel limit of this endpoint"
            )
        return dict(zip(names, session.run(names, {input_name: image}), strict=True))

    return infer


def bind_model(
    triton: Any,
    model_dir: Path,
    config_name: str,
    max_pixels: int,
    dynamic_batching: bool = True,
    warmup: bool = True,
) -> str:
    """Bind the model in ``model_dir`` as its ``configs/<config_name>.pbtxt`` describes it.

    Returns the model name with the graph file it serves, e.g. ``codistill_cnn (model.onnx)``.

    As in Triton, a model without that configuration falls back to its ``config.pbtxt``.
    Without ``dynamic_batching`` each request runs on its own, whatever the configuration;
    without ``warmup`` the configuration's ``model_warmup`` requests are skipped.
    """
    from pytriton.model_config import DynamicBatcher, ModelConfig

    chosen = model_dir / "configs" / f"{config_name}.pbtxt"
    config = read_config(chosen if chosen.is_file() else model_dir / "config.pbtxt")
    batcher = (
        DynamicBatcher(
            max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_size=list(config.dynamic_batching.preferred_batch_size),
        )
        if dynamic_batching and config.HasField("dynamic_batching")
        else None
    )
    count = sum(group.count for group in config.instance_group) or 1
    onnx_path = model_dir / VERSION / (config.default_model_filename or MODEL_FILE)
    triton.bind(
        model_name=config.name,
        infer_func=[
            _infer_function(
                onnx_path,
                config.input[0].name,
                spatial_axes(config),
                max_pixels,
                warmup_inputs(config) if warmup else [],
            )
            for _ in range(count)
        ],
        inputs=_tensors(config.input),
        outputs=_tensors(config.output),
        config=ModelConfig(max_batch_size=config.max_batch_size, batcher=batcher),
        strict=True,
    )
    return f"{config.name} ({onnx_path.name})"


def _warm_through_server(url: str, model_dirs: list[Path], config_name: str) -> None:
    """Send each model's warm-up requests through the running server, end to end."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    client = http.InferenceServerClient(url, network_timeout=600.0)
    try:
        for model_dir in model_dirs:
            chosen = model_dir / "configs" / f"{config_name}.pbtxt"
            config = read_config(chosen if chosen.is_file() else model_dir / "config.pbtxt")
            for request in warmup_inputs(config):
                tensors = []
                for name, array in request.items():
                    dtype = np_to_triton_dtype(array.dtype)
                    tensor = http.InferInput(name, list(array.shape), dtype)
                    tensor.set_data_from_numpy(array)
                    tensors.append(tensor)
                try:
                    client.infer(config.name, tensors)
                except InferenceServerException as err:
                    raise WarmupError(
                        f"{config.name}: its warm-up request failed ({err.message()}); lower "
                        "serving.warmup_size or start with --no-warmup"
                    ) from None
    finally:
        client.close()


class WarmupError(RuntimeError):
    """A model's configured warm-up request is one the endpoint refuses."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_workspaces(root: Path | None = None) -> list[Path]:
    """Remove the workspaces that killed servers of this user left behind; return them.

    Each server writes its process id into its workspace folder; a folder whose process is
    gone belongs to a server that could not clean up (SIGKILL, a crash, a lost machine).
    """
    removed = []
    for holder in sorted(Path(root or tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*")):
        try:
            pid = int((holder / PID_FILE).read_text())
            if holder.stat().st_uid != os.getuid() or _alive(pid):
                continue
        except (OSError, ValueError):  # not a server's folder, or one still starting
            continue
        shutil.rmtree(holder, ignore_errors=True)
        removed.append(holder)
    return removed


def _owner_only_regions(server_pid: int) -> None:
    """Make the Python backend's shared-memory regions of this server readable by its owner only.

    They carry request and response tensors between tritonserver and the model processes;
    the backend creates them world-readable whatever the umask, so they are narrowed once
    the models are loaded. Processes that have them open keep their access.
    """
    for region in Path("/dev/shm").glob(f"pytrtion{server_pid}-*"):
        region.chmod(0o600)


def _library_path() -> None:
    # The Python backend stub links libpython; on pyenv builds it is not on the default path.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


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
) -> None:
    """Serve every model in ``repository`` until SIGTERM, SIGINT or ``stop`` is set.

    The server gets its own workspace, removed on exit; ``ready`` is called with the bound
    model names (with their graph files) and that workspace once the server is up.
    """
    from pytriton.triton import Triton, TritonConfig

    repository = Path(repository)
    model_dirs = sorted(p for p in repository.iterdir() if (p / "configs").is_dir())
    if not model_dirs:
        raise FileNotFoundError(f"{repository}: no models; run the publish stage")
    _library_path()
    os.umask(0o077)  # owner-only files for whatever the server writes
    stop = stop or threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for stale in remove_stale_workspaces():
        print(f"removed {stale}, the workspace of a server that is gone", flush=True)
    # pytriton creates the workspace folder itself: give it a fresh path in a private folder.
    holder = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
    (holder / PID_FILE).write_text(str(os.getpid()))
    workspace = holder / "workspace"
    config = TritonConfig(
        http_address=host,
        http_port=ports.http,
        grpc_address=host,
        grpc_port=ports.grpc,
        metrics_address=host,
        metrics_port=ports.metrics,
        exit_timeout_secs=10,
    )
    triton = Triton(config=config, workspace=workspace)
    try:
        names = [
            bind_model(triton, d, config_name, max_pixels, dynamic_batching, warmup)
            for d in model_dirs
        ]
        triton.run()
        _owner_only_regions(os.getpid())
        if warmup:
            _warm_through_server(f"{host}:{ports.http}", model_dirs, config_name)
        if ready is not None:
            ready(names, holder)
        stop.wait()
    finally:
        triton.stop()
        shutil.rmtree(holder, ignore_errors=True)
