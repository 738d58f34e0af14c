"""The gRPC front of the local server: the HTTP front's checks, for Triton's gRPC service.

A message over the request budget is refused by gRPC itself, from its length prefix, before it
is read (``RESOURCE_EXHAUSTED``); an inference request whose declared shapes are negative, of
the wrong rank, over the budget or not filled by the data it carries gets ``INVALID_ARGUMENT``;
repository control, shared memory, logging and tracing get ``PERMISSION_DENIED``. Everything
else is relayed, as the bytes the client sent, to Triton's gRPC on a private loopback port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from codistill.serving.front import (
    ELEMENT_BYTES,
    RefusedRequestError,
    check_budget,
    declared_bytes,
    grpc_message_limit,
)

SERVICE = "inference.GRPCInferenceService"
# What clients may call besides inference: health, metadata, readiness, config, statistics.
READ_METHODS = frozenset(
    {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
    }
)
# Calls handled at once; up to QUEUED_CALLS more wait (gRPC may have read their messages),
# and any beyond get RESOURCE_EXHAUSTED at once. A stream holds a worker while it is open, so
# at most STREAMS are open together and the other workers stay free for single calls.
WORKERS = 16
QUEUED_CALLS = 16
STREAMS = 4
UPSTREAM_TIMEOUT_S = 600.0
# The typed lists a tensor's values may come in (``InferTensorContents``).
CONTENTS_FIELDS = tuple(f.name for f in pb.InferTensorContents.DESCRIPTOR.fields)


def check_infer_request(request: Any, max_bytes: int, rank: int | None = None) -> None:
    """Raise RefusedRequestError unless ``request`` (a ModelInferRequest) is sane and in budget."""
    if not request.inputs:
        raise RefusedRequestError(400, "the request names no inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RefusedRequestError(
            400, f"{len(raw)} raw input contents for {len(request.inputs)} inputs"
        )
    total = 0
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        declared = declared_bytes(tensor.name, shape, tensor.datatype, rank)
        total += declared
        check_budget(tensor.name, shape, tensor.datatype, total, max_bytes)
        if raw:
            sent = len(raw[index])
        elif "shared_memory_region" in tensor.parameters:
            continue  # registration is refused, so Triton refuses the region by name
        else:
            values = sum(len(getattr(tensor.contents, f)) for f in CONTENTS_FIELDS)
            sent = values * ELEMENT_BYTES[tensor.datatype]
        if sent != declared:
            raise RefusedRequestError(
                400,
                f"input {tensor.name}: shape {shape} ({tensor.datatype}) needs {declared} "
                f"bytes, the request holds {sent}",
            )


class GrpcFront:
    """The public gRPC listener; each inference request is checked, then relayed upstream."""

    def __init__(
        self, address: tuple[str, int], upstream: tuple[str, int], max_bytes: int, ranks: dict
    ) -> None:
        self.max_bytes = max_bytes
        self.ranks = ranks  # each served model's input rank, batch first
        self._channel: grpc.Channel | None = None
        self.upstream = upstream
        self.streams = threading.BoundedSemaphore(STREAMS)
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="codistill-grpc-front"),
            handlers=[_Handlers(self)],
            maximum_concurrent_rpcs=WORKERS + QUEUED_CALLS,
            options=[
                # a message over the budget is refused from its length, before it is read
                ("grpc.max_receive_message_length", grpc_message_limit(max_bytes)),
                ("grpc.so_reuseport", 0),  # a port another process holds is an error, not shared
            ],
        )
        host, port = address
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"address already in use: {host}:{port}")
        self.port = bound

    @property
    def upstream(self) -> tuple[str, int]:
        """Triton's gRPC address (host, port); setting it opens a new channel."""
        return self._upstream

    @upstream.setter
    def upstream(self, address: tuple[str, int]) -> None:
        # the old channel is left to the calls still using it, and closed once none holds it
        self._upstream = address
        self._channel = grpc.insecure_channel(
            f"{address[0]}:{address[1]}",
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        )

    def start(self) -> None:
        """Start answering."""
        self.server.start()

    def stop(self) -> None:
        """Stop answering, then close the channel to Triton."""
        self.server.stop(grace=5).wait()
        if self._channel is not None:
            self._channel.close()

    def relay(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Triton's answer to ``request`` (as sent); its error, or UNAVAILABLE while it restarts."""
        call = self._channel.unary_unary(f"/{SERVICE}/{method}")  # holds its channel
        metadata = [
            (key, value)
            for key, value in context.invocation_metadata()
            if not key.startswith("grpc-") and key != "user-agent"
        ]
        try:
            return call(request, timeout=_remaining(context), metadata=metadata)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                context.abort(err.code(), "the server behind this endpoint is restarting")
            context.abort(err.code(), err.details() or err.code().name)

    def parsed(self, request: bytes) -> Any:
        """The ModelInferRequest in ``request``; RefusedRequestError if it is not one."""
        try:
            return pb.ModelInferRequest.FromString(request)
        except DecodeError as err:
            raise RefusedRequestError(400, f"not an inference request: {err}") from None

    def check(self, parsed: Any) -> None:
        """RefusedRequestError unless the budget and the model's rank allow ``parsed``."""
        check_infer_request(parsed, self.max_bytes, self.ranks.get(parsed.model_name))

    def infer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Check one inference request, then relay it."""
        try:
            self.check(self.parsed(request))
        except RefusedRequestError as refused:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(refused))
        return self.relay("ModelInfer", request, context)

    def stream_infer(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator:
        """Check and answer each request of a stream in turn; a refusal is that reply's error.

        At most ``STREAMS`` streams are open at once; one more is refused at its start.
        """
        if not self.streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{STREAMS} streams are open already; use single calls or retry later",
            )
        try:
            for request in requests:
                yield self._stream_reply(request, context).SerializeToString()
        finally:
            self.streams.release()

    def _stream_reply(self, request: bytes, context: grpc.ServicerContext) -> Any:
        """The stream's reply to one request: Triton's answer, or the error, with the id."""
        try:
            parsed = self.parsed(request)
        except RefusedRequestError as refused:
            return pb.ModelStreamInferResponse(error_message=str(refused))
        failed = pb.ModelInferResponse(id=parsed.id, model_name=parsed.model_name)
        try:
            self.check(parsed)
            answer = self._channel.unary_unary(f"/{SERVICE}/ModelInfer")(
                request, timeout=_remaining(context)
            )
        except RefusedRequestError as refused:
            return pb.ModelStreamInferResponse(error_message=str(refused), infer_response=failed)
        except grpc.RpcError as err:
            message = err.details() or err.code().name
            return pb.ModelStreamInferResponse(error_message=message, infer_response=failed)
        return pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse.FromString(answer))


def _remaining(context: grpc.ServicerContext) -> float:
    """Seconds left of the client's deadline, at most the front's own limit."""
    left = context.time_remaining()
    return UPSTREAM_TIMEOUT_S if left is None else min(left, UPSTREAM_TIMEOUT_S)


def _refuse(method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not served here")

    return refuse


class _Handlers(grpc.GenericRpcHandler):
    """Route Triton's gRPC methods: reads relayed, inference checked, the rest refused."""

    def __init__(self, front: GrpcFront) -> None:
        self.front = front

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = details.method.lstrip("/").partition("/")
        if service != SERVICE:
            return None  # UNIMPLEMENTED
        if method == "ModelInfer":
            return grpc.unary_unary_rpc_method_handler(self.front.infer)
        if method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self.front.stream_infer)
        if method in READ_METHODS:
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: self.front.relay(method, request, context)
            )
        return grpc.unary_unary_rpc_method_handler(_refuse(method))


def start_grpc_front(
    host: str, port: int, upstream: tuple[str, int], max_bytes: int, ranks: dict[str, int]
) -> GrpcFront:
    """Listen on ``host:port`` and relay to Triton's gRPC at ``upstream`` (host, port)."""
    front = GrpcFront((host, port), upstream, max_bytes, ranks)
    front.start()
    return front
