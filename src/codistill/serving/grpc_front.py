"""The gRPC front of the local server: the HTTP front's checks, for Triton's gRPC service.

A message over the request budget is refused by gRPC itself, from its length prefix, before it
is read (``RESOURCE_EXHAUSTED``); an inference request whose declared shapes are negative, of
the wrong rank, over the budget or not filled by the data it carries gets ``INVALID_ARGUMENT``;
repository control, shared memory, logging and tracing get ``PERMISSION_DENIED``. Everything
else is relayed, as the bytes the client sent, to Triton's gRPC on a private loopback port.
"""

from __future__ import annotations

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
# Requests checked and relayed at once; more wait, their bodies unread (flow control).
WORKERS = 8
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
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="codistill-grpc-front"),
            handlers=[_Handlers(self)],
            # a message over the budget is refused from its length, before it is read
            options=[("grpc.max_receive_message_length", grpc_message_limit(max_bytes))],
        )
        host, port = address
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"address already in use: {host}:{port}")

    @property
    def upstream(self) -> tuple[str, int]:
        """Triton's gRPC address (host, port); setting it opens a new channel."""
        return self._upstream

    @upstream.setter
    def upstream(self, address: tuple[str, int]) -> None:
        old, self._upstream = self._channel, address
        self._channel = grpc.insecure_channel(
            f"{address[0]}:{address[1]}",
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        )
        if old is not None:
            old.close()

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
        call = self._channel.unary_unary(f"/{SERVICE}/{method}")
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

    def checked(self, request: bytes) -> Any:
        """The ModelInferRequest in ``request``; RefusedRequestError unless the budget allows it."""
        try:
            parsed = pb.ModelInferRequest.FromString(request)
        except DecodeError as err:
            raise RefusedRequestError(400, f"not an inference request: {err}") from None
        check_infer_request(parsed, self.max_bytes, self.ranks.get(parsed.model_name))
        return parsed

    def infer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Check one inference request, then relay it."""
        try:
            self.checked(request)
        except RefusedRequestError as refused:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(refused))
        return self.relay("ModelInfer", request, context)

    def stream_infer(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator:
        """Check and answer each request of a stream in turn; a refusal is that reply's error."""
        for request in requests:
            try:
                parsed = self.checked(request)
            except RefusedRequestError as refused:
                reply = pb.ModelStreamInferResponse(error_message=str(refused))
                yield reply.SerializeToString()
                continue
            try:
                answer = self._channel.unary_unary(f"/{SERVICE}/ModelInfer")(
                    request, timeout=_remaining(context)
                )
            except grpc.RpcError as err:
                reply = pb.ModelStreamInferResponse(
                    error_message=err.details() or err.code().name,
                    infer_response=pb.ModelInferResponse(id=parsed.id),
                )
            else:
                reply = pb.ModelStreamInferResponse(
                    infer_response=pb.ModelInferResponse.FromString(answer)
                )
            yield reply.SerializeToString()


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
