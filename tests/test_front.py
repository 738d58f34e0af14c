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
