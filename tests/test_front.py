"""The HTTP front's own connection handling, without a Triton behind it."""

from __future__ import annotations

import socket
import struct
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
