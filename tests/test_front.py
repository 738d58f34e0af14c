"""The fronts' own handling of connections and requests, without a Triton behind them."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from codistill.serving.front import start_front
from codistill.serving.process import free_port


@pytest.fixture
def front():
    """A front listening on loopback, relaying to a port where nothing listens."""
    server, thread = start_front("127.0.0.1", 0, ("127.0.0.1", free_port()), 1 << 20, {})
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_client_that_resets_its_connection_leaves_no_traceback(front, capfd):
    host, port = front.server_address[:2]
    for _ in range(3):
        connection = socket.create_connection((host, port), timeout=10)
        connection.sendall(b"GET /v2/health/re")  # half a request line, then a reset
        time.sleep(0.2)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    time.sleep(0.5)
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(b"POST /v2/repository/index HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 403 "), answer  # still serving after the resets
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "ConnectionResetError" not in captured.out + captured.err


def test_an_unforeseen_connection_failure_is_one_line(front, capfd):
    try:
        raise ValueError("the first line\nand a second")
    except ValueError:
        front.handle_error(None, ("127.0.0.1", 4242))
    captured = capfd.readouterr()
    assert captured.out == "front: the connection from 127.0.0.1:4242 failed: the first line\n"
    assert "Traceback" not in captured.err


def post_head(port: int, length: int) -> socket.socket:
    """A connection that has sent an inference request's head announcing ``length`` bytes."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: {length}\r\n\r\n"
    connection.sendall(head.encode())
    return connection


def status_of(connection: socket.socket) -> str:
    """The status line of the answer on ``connection``."""
    return connection.recv(65536).decode().splitlines()[0]


def test_large_bodies_are_read_a_few_at_a_time_and_small_ones_never_wait(front):
    import threading

    from codistill.serving.front import LARGE_BODY_BYTES

    front.large_bodies = threading.BoundedSemaphore(1)
    front.slot_wait_s = 0.5
    port = front.server_address[1]
    large = LARGE_BODY_BYTES + 1
    slow = post_head(port, large)
    slow.sendall(b"x" * 1000)  # holds the one slot while the rest of its body is awaited
    time.sleep(0.3)
    started = time.monotonic()
    with post_head(port, large) as waiting:
        assert status_of(waiting).startswith("HTTP/1.1 503 ")  # refused unread after the wait
    assert 0.4 < time.monotonic() - started < 10
    with post_head(port, 9) as small:
        small.sendall(b"not json!")
        assert status_of(small).startswith("HTTP/1.1 400 ")  # no slot needed
    slow.sendall(b"x" * (large - 1000))
    assert status_of(slow).startswith("HTTP/1.1 400 ")  # read, then refused as not JSON
    slow.close()
    with post_head(port, large) as after:
        after.sendall(b"x" * large)
        assert status_of(after).startswith("HTTP/1.1 400 ")  # the slot came back


def test_a_body_that_trickles_in_past_the_deadline_gets_408_and_frees_its_slot(front):
    import threading

    from codistill.serving.front import LARGE_BODY_BYTES

    front.large_bodies = threading.BoundedSemaphore(1)
    front.body_deadline_s = 0.5
    port = front.server_address[1]
    large = LARGE_BODY_BYTES + 1
    with post_head(port, large) as trickle:
        for _ in range(3):  # a few bytes at a time, each well within the read timeout
            trickle.sendall(b"x" * 10)
            time.sleep(0.4)
        assert status_of(trickle).startswith("HTTP/1.1 408 ")
    with post_head(port, large) as after:
        after.sendall(b"x" * large)
        assert status_of(after).startswith("HTTP/1.1 400 ")  # the slot was given back


def infer_request(shape: list[int], datatype: str = "UINT8", **tensor_fields) -> object:
    """A ModelInferRequest of one input ``image`` (no data unless given)."""
    from tritonclient.grpc import service_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image", datatype=datatype, shape=shape, **tensor_fields
    )
    return pb.ModelInferRequest(model_name="m", inputs=[tensor])


def test_grpc_requests_are_sized_from_what_they_declare_and_carry():
    from tritonclient.grpc import service_pb2 as pb

    from codistill.serving.front import RefusedRequestError
    from codistill.serving.grpc_front import check_infer_request

    typed = infer_request(
        [1, 2, 2, 3], "INT32", contents=pb.InferTensorContents(int_contents=[1] * 12)
    )
    check_infer_request(typed, 1000, 4)  # 12 values of 4 bytes: 48 bytes, sent
    short = infer_request([1, 2, 2, 3], "INT32", contents=pb.InferTensorContents(int_contents=[1]))
    two_raw = infer_request([1, 2, 2, 3])
    two_raw.raw_input_contents.extend([b"\0" * 12, b"\0" * 12])
    for request, message in (
        (short, "needs 48 bytes, the request holds 4"),
        (infer_request([1, 2, 2, 3], "BYTES"), "datatype 'BYTES' is not one served"),
        (two_raw, "2 raw input contents for 1 inputs"),
        (infer_request([1, 100, 100, 3]), "declares 30000 bytes, over this server's limit of 1000"),
    ):
        with pytest.raises(RefusedRequestError, match=message):
            check_infer_request(request, 1000, 4)


@pytest.fixture
def grpc_front():
    """A gRPC front on loopback, relaying to a port where nothing listens."""
    from codistill.serving.grpc_front import start_grpc_front

    front = start_grpc_front("127.0.0.1", free_port(), ("127.0.0.1", free_port()), 1 << 20, {})
    yield front
    front.stop()


def test_a_grpc_port_in_use_is_refused_not_shared(grpc_front):
    from codistill.serving.grpc_front import GrpcFront

    with pytest.raises(OSError, match=f"address already in use: 127.0.0.1:{grpc_front.port}"):
        GrpcFront(("127.0.0.1", grpc_front.port), ("127.0.0.1", 9), 1 << 20, {})


def test_idle_streams_never_take_the_workers_single_calls_need(grpc_front):
    import grpc

    from codistill.serving.grpc_front import SERVICE, STREAMS

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_front.port}")
    stream = channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")
    idle = threading.Event()
    opened = [stream(iter(idle.wait, True)) for _ in range(STREAMS)]  # open, sending nothing
    try:
        time.sleep(1.0)
        with pytest.raises(grpc.RpcError) as refused:
            next(stream(iter([b""])))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        live = channel.unary_unary(f"/{SERVICE}/ServerLive")
        with pytest.raises(grpc.RpcError) as answered:
            live(b"", timeout=10)
        # a worker took it at once: the upstream is down, not the front
        assert answered.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        idle.set()
        for call in opened:
            call.cancel()
        channel.close()


@pytest.mark.parametrize("option", ["--port", "--grpc-port"])
def test_the_front_command_on_a_busy_port_says_which_in_one_line(tmp_path, capsys, option):
    from codistill.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {"--port": str(free_port()), "--grpc-port": str(free_port()), option: str(port)}
        argv = ["front", "--upstream", "127.0.0.1:9", "--grpc-upstream", "127.0.0.1:9"]
        argv += ["--repository", str(tmp_path), *(x for kv in ports.items() for x in kv)]
        assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"codistill front: {option} {port}: ") and error.count("\n") == 1
    assert "in use" in error.lower()


def test_the_front_writes_to_its_client_and_to_triton_without_waiting_for_acks(monkeypatch):
    """With Nagle's algorithm a body written after its headers waits for the peer's delayed ack.

    Measured through the front before this setting: 52 ms for a 128x128 request whose
    server time was 8 ms (the 40 ms of Linux's delayed ack, on every small request).
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from codistill.serving.front import FrontHandler

    class Ready(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    def no_delay(connection: socket.socket) -> bool:
        return connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    seen: list[tuple[bool, bool]] = []
    finish = FrontHandler.finish

    def recording_finish(handler: FrontHandler) -> None:
        upstream = getattr(handler, "_upstream", None)  # None: the relay never connected
        seen.append((no_delay(handler.connection), upstream and no_delay(upstream.sock)))
        finish(handler)

    monkeypatch.setattr(FrontHandler, "finish", recording_finish)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    server, thread = start_front("127.0.0.1", 0, upstream.server_address[:2], 1 << 20, {})
    try:
        with socket.create_connection(server.server_address[:2], timeout=10) as connection:
            connection.sendall(b"GET /v2/health/ready HTTP/1.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [(True, True)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        upstream.shutdown()
        upstream.server_close()
