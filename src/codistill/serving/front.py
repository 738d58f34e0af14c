"""The HTTP front of the local server: every inference request is sized before Triton sees it.

Triton's HTTP server sizes a request from the shape it declares and allocates that much before
any model code runs: a 97-byte JSON body declaring a 1×100000×100000×3 image aborts it. The
front listens on the public HTTP port, refuses a body over the request budget (413), a
declared shape that is negative, over the budget or that disagrees with the data sent (400),
and passes everything else, unchanged, to Triton on a private loopback port.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from codistill.engine.host_memory import return_large_blocks

# Bytes per element of the tensor types a request may declare (BYTES is sized by its data).
ELEMENT_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}
INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(/versions/[^/]+)?/infer$")
# What clients may read: health, server and model metadata, readiness, config, statistics.
READ_PATHS = tuple(
    re.compile(pattern)
    for pattern in (
        r"^/v2$",
        r"^/v2/health/(live|ready)$",
        r"^/v2/models/[^/]+(/versions/[^/]+)?(/ready|/config|/stats)?$",
        r"^/v2/models/stats$",
    )
)
DIGITS = re.compile(r"[0-9]+")
CLIENT_TIMEOUT_S = 60.0
HEADER_LENGTH = "Inference-Header-Content-Length"
# Headers that describe one connection, not the request or response it carries.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
JSON_SLACK_BYTES = 64 * 1024  # a request's JSON beyond its tensor data
RGB_BYTES = 3  # one uint8 pixel of an RGB image: the byte budget per budgeted pixel
# Bodies over this size are read and checked a few at a time (JSON takes several times its size
# once parsed); a request that waits longer than the slot wait gets a 503. A body must arrive
# within the body deadline, however slowly its bytes trickle in.
LARGE_BODY_BYTES = 1 << 20
LARGE_BODY_SLOTS = 4
SLOT_WAIT_S = 30.0
BODY_DEADLINE_S = 120.0


def http_body_limit(max_bytes: int) -> int:
    """The largest HTTP body read for a budget of ``max_bytes``: JSON takes up to 4 a value."""
    return 4 * max_bytes + JSON_SLACK_BYTES


def grpc_message_limit(max_bytes: int) -> int:
    """The largest gRPC message read for a budget of ``max_bytes`` (tensor data is raw bytes)."""
    return max_bytes + JSON_SLACK_BYTES


def model_ranks(repository: Path, config_name: str = "cpu") -> dict[str, int]:
    """Each model's input rank, batch first, from a model repository's configs."""
    from codistill.serving.backend_repository import chosen_config

    configs = [
        chosen_config(d, config_name)
        for d in sorted(repository.iterdir())
        if (d / "configs").is_dir() or (d / "config.pbtxt").is_file()
    ]
    return {c.name: len(c.input[0].dims) + (1 if c.max_batch_size > 0 else 0) for c in configs}


def first_line(error: BaseException | None) -> str:
    """The first line of ``error``'s message, or its type's name when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class RefusedRequestError(ValueError):
    """A request the front answers itself, with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (Triton would read the first of a repeat)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"the key {repeated[0]!r} is repeated")
    return dict(pairs)


def _leaves(value: Any, budget: int) -> int:
    """How many numbers a JSON ``data`` value holds (nested lists flattened), up to ``budget``."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
    return count


def declared_bytes(name: str, shape: Any, datatype: Any, rank: int | None) -> int:
    """The bytes input ``name`` declares; RefusedRequestError for a shape or type not served.

    ``rank``, where known, is the number of dimensions the model's input has, batch first.
    """
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise RefusedRequestError(400, f"input {name}: shape must be a list of integers")
    if any(d < 0 for d in shape):
        raise RefusedRequestError(400, f"input {name}: shape {shape} has a negative dimension")
    if rank is not None and len(shape) != rank:
        raise RefusedRequestError(
            400,
            f"input {name}: shape {shape} has {len(shape)} dimensions; the model takes "
            f"{rank}, the batch first",
        )
    if datatype not in ELEMENT_BYTES:
        raise RefusedRequestError(400, f"input {name}: datatype {datatype!r} is not one served")
    return math.prod(shape) * ELEMENT_BYTES[datatype]


def check_budget(name: str, shape: list[int], datatype: str, total: int, max_bytes: int) -> None:
    """Raise RefusedRequestError if the request's inputs up to ``name`` declare over the budget."""
    if total > max_bytes:
        raise RefusedRequestError(
            400,
            f"input {name}: shape {shape} ({datatype}) declares "
            f"{math.prod(shape) * ELEMENT_BYTES[datatype]} bytes, over this server's limit of "
            f"{max_bytes} bytes per request (--max-pixels RGB pixels)",
        )


def check_inputs(
    header: dict[str, Any], binary_bytes: int, max_bytes: int, rank: int | None = None
) -> None:
    """Raise RefusedRequestError unless every input's declared size is sane, in budget and sent.

    ``binary_bytes`` is the length of the body after the JSON header (binary tensor data);
    ``rank``, where known, is the number of dimensions the model's input has, batch first.
    """
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RefusedRequestError(400, "the request names no inputs")
    declared_total, binary_total = 0, 0
    for tensor in inputs:
        name = tensor.get("name", "?") if isinstance(tensor, dict) else "?"
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        datatype = tensor.get("datatype")
        declared = declared_bytes(name, shape, datatype, rank)
        declared_total += declared
        check_budget(name, shape, datatype, declared_total, max_bytes)
        elements = math.prod(shape)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RefusedRequestError(400, f"input {name}: parameters must be an object")
        if "binary_data_size" in parameters:
            if parameters["binary_data_size"] != declared:
                raise RefusedRequestError(
                    400,
                    f"input {name}: shape {shape} ({datatype}) needs {declared} bytes, "
                    f"binary_data_size says {parameters['binary_data_size']}",
                )
            binary_total += declared
        elif "data" in tensor:
            sent = _leaves(tensor["data"], elements)
            if sent != elements:
                raise RefusedRequestError(
                    400,
                    f"input {name}: shape {shape} holds {elements} values, its data "
                    f"{'more' if sent > elements else sent}",
                )
        elif "shared_memory_region" not in parameters:
            raise RefusedRequestError(400, f"input {name}: no data")
    if binary_total != binary_bytes:
        raise RefusedRequestError(
            400,
            f"the inputs declare {binary_total} bytes of binary data, "
            f"the body holds {binary_bytes}",
        )


def check_infer_body(
    body: bytes | bytearray, header_length: str | None, max_bytes: int, rank: int | None = None
) -> None:
    """Raise RefusedRequestError unless ``body`` is an inference request the budget allows."""
    try:
        json_length = len(body) if header_length is None else int(header_length)
        if not 0 <= json_length <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {header_length} outside the body")
        header = json.loads(body[:json_length], object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RefusedRequestError(400, f"not an inference request: {err}") from None
    if not isinstance(header, dict):
        raise RefusedRequestError(400, "not an inference request: the JSON is not an object")
    check_inputs(header, len(body) - json_length, max_bytes, rank)


class Front(ThreadingHTTPServer):
    """The public HTTP listener; each request is checked, then relayed to ``upstream``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        upstream: tuple[str, int],
        max_bytes: int,
        ranks: dict[str, int],
    ) -> None:
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.ranks = ranks  # each served model's input rank, batch first
        self.max_body = http_body_limit(max_bytes)
        self.large_bodies = threading.BoundedSemaphore(LARGE_BODY_SLOTS)
        self.slot_wait_s = SLOT_WAIT_S
        self.body_deadline_s = BODY_DEADLINE_S
        super().__init__(address, FrontHandler)

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A client that hangs up is routine: silent; anything else: one line, no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        host, port = client_address[:2]
        print(f"front: the connection from {host}:{port} failed: {first_line(error)}", flush=True)


class FrontHandler(BaseHTTPRequestHandler):
    """Check one request, relay it to Triton on a connection this client connection keeps."""

    protocol_version = "HTTP/1.1"
    # A response goes out as headers, then body: with Nagle's algorithm the body would wait for
    # the client's delayed acknowledgement of the headers (40 ms on Linux). The connection to
    # Triton has it off already (http.client sets TCP_NODELAY).
    disable_nagle_algorithm = True
    timeout = CLIENT_TIMEOUT_S  # a client that stops sending loses its thread
    server: Front

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Triton's own log and metrics count the requests."""

    def _refuse(self, refused: RefusedRequestError, close: bool = False) -> None:
        body = json.dumps({"error": str(refused)}).encode()
        self.close_connection = self.close_connection or close
        self.send_response(refused.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _single(self, name: str) -> str | None:
        """The one value of header ``name``; a repeated header is refused (smuggling)."""
        values = self.headers.get_all(name) or []
        if len(values) > 1:
            raise RefusedRequestError(400, f"the header {name} is repeated")
        return values[0] if values else None

    def _length(self) -> int:
        """The body's length: one Content-Length of plain digits, within the limit."""
        if self._single("Transfer-Encoding") is not None:
            raise RefusedRequestError(411, "send the body with a Content-Length, not chunked")
        text = self._single("Content-Length") or "0"
        if not DIGITS.fullmatch(text):
            raise RefusedRequestError(400, f"Content-Length {text!r} is not a length")
        if int(text) > self.server.max_body:
            raise RefusedRequestError(
                413,
                f"the body holds {int(text)} bytes, over this server's limit of "
                f"{self.server.max_body}",
            )
        return int(text)

    def _target(self) -> tuple[str, re.Match | None]:
        """The request's path (origin form only) and its infer match; others are refused."""
        if not self.path.startswith("/"):
            raise RefusedRequestError(400, "the request target must be a path")
        path = self.path.split("?")[0]
        infer = INFER_PATH.match(path)
        if infer is not None and self.command == "POST":
            return path, infer
        if self.command in ("GET", "HEAD") and any(r.match(path) for r in READ_PATHS):
            return path, None
        raise RefusedRequestError(403, f"{self.command} {path} is not served here")

    def handle_expect_100(self) -> bool:
        """Vet the target and the length before the client sends its body."""
        try:
            self._target()
            self._length()
        except RefusedRequestError as refused:
            self._refuse(refused, close=True)
            return False
        return super().handle_expect_100()

    def _checked_body(self) -> bytearray:
        path, infer = self._target()
        try:
            length = self._length()
            large = length > LARGE_BODY_BYTES
            if large:
                self._take_large_body_slot()
        except RefusedRequestError:
            self.close_connection = True  # the body is not read
            raise
        try:
            body = self._read_body(length)
            if infer is not None:
                self._check_infer(body, infer["model"])
            elif body:
                raise RefusedRequestError(400, f"{path} takes no body")
            return body
        finally:
            if large:  # parsed and checked: the next large body may be read
                self.server.large_bodies.release()

    def _read_body(self, length: int) -> bytearray:
        """The body, read within the body deadline; 408 (connection closed) after it.

        Read into one buffer of its size: a large one is mapped and unmapped whole, where the
        pieces a socket returns would stay in this connection thread's heap after it ends.
        """
        deadline = time.monotonic() + self.server.body_deadline_s
        body, got = bytearray(length), 0
        with memoryview(body) as view:
            while got < length:
                read = self.rfile.readinto1(view[got : got + (1 << 20)])
                if not read:
                    self.close_connection = True
                    raise RefusedRequestError(400, f"the body ended {length - got} bytes early")
                got += read
                if got < length and time.monotonic() > deadline:
                    self.close_connection = True
                    raise RefusedRequestError(
                        408, f"the body did not arrive within {self.server.body_deadline_s:.0f} s"
                    )
        return body

    def _check_infer(self, body: bytearray, model: str) -> None:
        if self._single("Content-Encoding") is not None:
            raise RefusedRequestError(400, "send inference requests uncompressed")
        header_length = self._single(HEADER_LENGTH)
        if header_length is not None and not DIGITS.fullmatch(header_length):
            raise RefusedRequestError(400, f"{HEADER_LENGTH} {header_length!r} is not a length")
        check_infer_body(body, header_length, self.server.max_bytes, self.server.ranks.get(model))

    def _take_large_body_slot(self) -> None:
        """Wait for one of the few slots large bodies are read in; 503 after the wait."""
        if not self.server.large_bodies.acquire(timeout=self.server.slot_wait_s):
            raise RefusedRequestError(
                503,
                f"{LARGE_BODY_SLOTS} large requests are being read already; send it again later",
            )

    def _relay(self) -> None:
        try:
            body = self._checked_body()
        except RefusedRequestError as refused:
            self._refuse(refused)
            return
        except Exception as err:  # a request no check foresaw: one line, never a traceback
            message = f"not a request this server takes: {first_line(err)}"
            self._refuse(RefusedRequestError(400, message))
            return
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP | {"content-length", "expect"}
        }
        answer = self._forward(body, headers)
        if answer is None:
            self._refuse(RefusedRequestError(503, "the server behind this endpoint is restarting"))
            return
        status, answer_headers, payload = answer
        self.send_response(status)
        for key, value in answer_headers:
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytearray, headers: dict[str, str]) -> tuple | None:
        """Triton's answer (status, headers, body); one retry on a fresh connection."""
        for fresh in (False, True):
            upstream = None if fresh else getattr(self, "_upstream", None)
            upstream = upstream or http.client.HTTPConnection(*self.server.upstream, timeout=600)
            self._upstream = upstream
            try:
                upstream.request(self.command, self.path, body, headers)
                answer = upstream.getresponse()
                return answer.status, answer.getheaders(), answer.read()
            except (OSError, http.client.HTTPException):
                upstream.close()
                self._upstream = None
        return None

    def finish(self) -> None:
        """Close this client connection's connection to Triton with it."""
        upstream = getattr(self, "_upstream", None)
        if upstream is not None:
            upstream.close()
        super().finish()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _relay  # noqa: N815


def start_front(
    host: str,
    port: int,
    upstream: tuple[str, int],
    max_bytes: int,
    ranks: dict[str, int],
) -> tuple[Front, threading.Thread]:
    """Listen on ``host:port`` and relay to Triton's HTTP at ``upstream`` (host, port).

    Blocks of a large body or more come from pages unmapped when freed, in this whole process.
    """
    return_large_blocks(LARGE_BODY_BYTES)
    front = Front((host, port), upstream, max_bytes, ranks)
    thread = threading.Thread(target=front.serve_forever, name="codistill-http-front", daemon=True)
    thread.start()
    return front, thread
