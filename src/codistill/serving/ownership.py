"""Lock files that tell what a live server owns from what a dead one left behind.

A server holds an exclusive ``flock`` on a lock file for as long as it runs; the kernel drops
the lock when the process ends, however it ends. Unlike a process id, the lock means the same
in every PID namespace that shares the file system (containers sharing ``/dev/shm``), and a
reused process id cannot make a dead server's files look alive.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path


def hold(path: Path) -> int | None:
    """Create ``path`` and lock it for this process's life; its descriptor, or None if taken.

    None also when another process removed the file between its creation and the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def release(fd: int, path: Path) -> None:
    """Remove the lock file ``path`` this process holds as ``fd``, then drop the lock."""
    path.unlink(missing_ok=True)
    os.close(fd)


def remove_if_abandoned(path: Path, remove: Callable[[], None]) -> bool:
    """If no live process holds the lock file ``path``, call ``remove`` and delete the file.

    Both happen under the lock, so a server starting meanwhile cannot claim the file. A lock
    file of another user, or one that is gone, is left alone (False).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its server is alive
        os.close(fd)
        return False
    remove()
    release(fd, path)
    return True
