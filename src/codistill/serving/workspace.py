"""A local server's private files: its workspace folder and its shared-memory regions.

Each server holds a lock on a file in its workspace and one in ``/dev/shm`` for as long as
it runs (``ownership``); the next start removes what servers that can no longer hold theirs
(SIGKILL, a crash, a lost machine) left behind, and nothing of a live one, whatever PID
namespace it runs in.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from codistill.serving.errors import ServerError
from codistill.serving.ownership import hold, release, remove_if_abandoned

WORKSPACE_PREFIX = "codistill-triton-"
LOCK_FILE = "server.lock"
SHM_ROOT = Path("/dev/shm")
# A server's regions are named ``codistill<token>-...``, its lock ``codistill<token>.lock``.
SHM_NAME = "codistill"
SHM_LOCK_SUFFIX = ".lock"


def _regions(token: str, shm: Path) -> list[Path]:
    return sorted(shm.glob(f"{SHM_NAME}{token}-*"))


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class ServerWorkspace:
    """A new server's workspace folder and shared-memory name, held until ``close``."""

    def __init__(self, root: Path | None = None, shm: Path = SHM_ROOT) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=root))
        self.token = self.folder.name.removeprefix(WORKSPACE_PREFIX)  # letters, digits, _
        self.shm = shm
        self._held = []
        for lock in (self.folder / LOCK_FILE, shm / f"{SHM_NAME}{self.token}{SHM_LOCK_SUFFIX}"):
            fd = hold(lock)
            if fd is None:
                self.close()
                raise ServerError(f"{lock}: another process took this server's lock file")
            self._held.append((fd, lock))

    @property
    def shm_prefix(self) -> str:
        """The name prefix of this server's shared-memory regions."""
        return f"{SHM_NAME}{self.token}-"

    def regions(self) -> list[Path]:
        """The server's shared-memory regions."""
        return _regions(self.token, self.shm)

    def remove_regions(self) -> None:
        """Unlink this server's regions (after its tritonserver stopped)."""
        _unlink_all(self.regions())

    def owner_only(self) -> None:
        """Make the Python backend's shared-memory regions readable by their owner only.

        They carry request and response tensors between tritonserver and the model processes;
        the backend creates them world-readable whatever the umask, so they are narrowed once
        the models are loaded. Processes that have them open keep their access.
        """
        for region in self.regions():
            with contextlib.suppress(FileNotFoundError):  # a region the backend just dropped
                region.chmod(0o600)

    def close(self) -> None:
        """Remove the regions, the folder and the locks."""
        self.remove_regions()
        shutil.rmtree(self.folder, ignore_errors=True)
        for fd, lock in reversed(self._held):
            release(fd, lock)
        self._held = []


def remove_stale_workspaces(root: Path | None = None) -> list[Path]:
    """Remove the workspaces of servers that are gone; return them.

    A folder without its lock file is one still starting, and is left alone.
    """
    removed = []
    for folder in sorted(Path(root or tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*")):
        lock = folder / LOCK_FILE
        if remove_if_abandoned(lock, lambda f=folder: shutil.rmtree(f, ignore_errors=True)):
            removed.append(folder)
    return removed


def remove_stale_regions(shm: Path = SHM_ROOT) -> list[Path]:
    """Remove the shared-memory regions of servers that are gone; return them.

    A server whose tritonserver crashed cannot unlink its regions; the lock file beside them
    says whether their server still runs.
    """
    removed: list[Path] = []
    for lock in sorted(shm.glob(f"{SHM_NAME}*{SHM_LOCK_SUFFIX}")):
        token = lock.name.removeprefix(SHM_NAME).removesuffix(SHM_LOCK_SUFFIX)
        regions = _regions(token, shm)
        if remove_if_abandoned(lock, lambda r=regions: _unlink_all(r)):
            removed += regions
    return removed
