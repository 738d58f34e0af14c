"""Lock files that tell what a live server owns from what a dead one left behind.

A server holds an exclusive ``flock`` on a lock file for as long as it runs; the kernel drops
the lock when the process ends, however it ends. Unlike a process id, the lock means the same
in every PID namespace that shares the file system (containers sharing ``/dev/shm``), and a
reused process id cannot make a dead server's files look alive.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def hold(path: Path) -> int | None:
    """Create ``path`` locked by this process for its life; its descriptor, or None if taken.

    The file is made and locked under a private name, then linked into place, so no other
    process ever sees it unlocked; a ``path`` that exists already (a live server's, or one
    another user made) is never taken over.
    """
    fd, private = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.link(private, path)
    except FileExistsError:
        os.close(fd)
        return None
    finally:
        os.unlink(private)
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
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # gone, another user's, or a symbolic link (ELOOP)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its server is alive
        os.close(fd)
        return False
    remove()
    release(fd, path)
    return True
