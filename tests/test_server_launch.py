"""How ``codistill serve`` starts tritonserver: beside the gRPC front's threads, tied to serve."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from codistill.serving.local_server import start_tied_to_this_process

LAUNCHES = 100


def test_starts_beside_a_busy_grpc_server_all_reach_their_program():
    # a Python preexec_fn forked beside these threads aborted in gRPC's fork handlers (8 of
    # 200 starts here, 1 in CI); the launcher's child runs no Python before its exec
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    done = threading.Event()

    def call_until_done() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/codistill.Test/Unknown")
            while not done.is_set():
                with contextlib.suppress(grpc.RpcError):  # nothing serves it: refused
                    call(b"", timeout=1)

    callers = [threading.Thread(target=call_until_done) for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        codes = [
            start_tied_to_this_process(["/bin/sh", "-c", "exit 7"], dict(os.environ)).wait(30)
            for _ in range(LAUNCHES)
        ]
    finally:
        done.set()
        for caller in callers:
            caller.join(10)
        server.stop(None)
    assert codes == [7] * LAUNCHES  # each ran the program itself (7), none died on the way


def test_the_started_program_ends_when_its_starter_is_killed():
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from codistill.serving.local_server import start_tied_to_this_process"
            " as start; import os; print(start(['/bin/sleep', '300'], dict(os.environ)).pid,"
            " flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sleeper = int(starter.stdout.readline())
    try:
        assert _running(sleeper)
        starter.send_signal(signal.SIGKILL)
        starter.wait(30)
        deadline = time.monotonic() + 30
        while _running(sleeper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(sleeper)
    finally:
        for pid in (starter.pid, sleeper):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        starter.wait(30)


def test_the_server_starts_in_its_own_environment_with_default_signal_handling():
    from codistill.serving.local_server import _server_environment

    started = start_tied_to_this_process(["/bin/sleep", "300"], _server_environment())
    try:
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{started.pid}/exe") != os.path.realpath("/bin/sleep"):
            assert time.monotonic() < deadline, "the launcher never reached its program"
            time.sleep(0.05)
        status = Path(f"/proc/{started.pid}/status").read_text()
        ignored = int(re.search(r"^SigIgn:\s+(\w+)$", status, re.M).group(1), 16)
        for default in (signal.SIGPIPE, signal.SIGXFSZ):  # as a plain start leaves them
            assert not ignored & (1 << (default - 1)), default.name
    finally:
        started.kill()
        started.wait(30)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting for its new parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
