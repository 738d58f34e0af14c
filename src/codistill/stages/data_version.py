"""The check that a raw data folder holds exactly the version its DVC file records.

``dvc repro`` would record any change it finds in a folder that a stage depends on, and that
a ``.dvc`` file tracks, as that data's new version before a single stage ran: a corrupted mask
would rewrite ``data.dvc`` and ``dvc.lock`` even though the data gate then rejects it, and
freezing ``data.dvc`` does not stop it. So the prepare stage does not depend on the data
folder. ``dvc.yaml`` reads ``data.dvc`` as
variables and passes the recorded hash on prepare's command line, so that a new recorded
version (``dvc add``, or a ``git pull`` and ``dvc checkout``) reruns it, and prepare checks
the folder against that record before it reads anything. A change that was never recorded
stops it, named file by file, and every recorded file stays as it was.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from codistill.stage_result import StageFailedError

# How many changed files the error names before it only counts them.
LISTED_CHANGES = 5


class DataVersionError(StageFailedError):
    """A data folder is missing or differs from the version its DVC file records."""


@dataclass(frozen=True)
class RecordedVersion:
    """A ``.dvc`` file with one output, and the hash it is expected to record (if given)."""

    dvc_file: Path
    md5: str | None = None

    def output(self) -> dict[str, Any]:
        """The file's one output entry (``path``, ``md5``, ...)."""
        if not self.dvc_file.is_file():
            raise DataVersionError(f"{self.dvc_file}: no such DVC file")
        try:
            (entry,) = yaml.safe_load(self.dvc_file.read_text())["outs"]
            entry["path"]
        except (yaml.YAMLError, TypeError, KeyError, ValueError) as err:
            raise DataVersionError(
                f"{self.dvc_file}: not a DVC file with one output ({err!r})"
            ) from None
        return entry

    def tracked_folder(self) -> Path:
        """The folder the file records."""
        return self.dvc_file.parent / self.output()["path"]


def symlink_loops(folder: Path) -> list[Path]:
    """Every symbolic link under ``folder`` that never reaches a file or folder (a loop)."""
    loops = []
    for root, folders, files in os.walk(folder):  # links to folders are listed, not entered
        for name in sorted([*folders, *files]):
            path = Path(root) / name
            try:
                path.stat()
            except OSError as err:
                if err.errno == errno.ELOOP:
                    loops.append(path)
    return loops


def changed_files(folder: Path, dvc_file: Path) -> list[str]:
    """Each file under ``folder`` that differs from its record, as ``"kind path"``."""
    try:
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
    except ImportError:
        raise DataVersionError(
            f"checking {folder} against {dvc_file} needs DVC: install codistill[pipeline]"
        ) from None
    loops = symlink_loops(folder)
    if loops:
        more = f" and {len(loops) - 1} more" if len(loops) > 1 else ""
        raise DataVersionError(f"symlink loop: {loops[0]}{more}; nothing was read")
    try:
        repo = Repo(str(dvc_file.resolve().parent))
    except NotDvcRepoError:
        raise DataVersionError(f"{dvc_file}: not inside a DVC repository") from None
    with repo:
        target = folder.resolve().relative_to(Path(repo.root_dir)).as_posix()
        status = repo.data_status(targets=[target], granular=True, untracked_files="no")
    return [
        f"{kind} {path}"
        for kind, paths in sorted(status["uncommitted"].items())
        for path in sorted(paths)
        if not path.endswith("/") and (path == target or path.startswith(f"{target}/"))
    ]


def require_recorded_version(folder: Path, recorded: RecordedVersion) -> None:
    """Raise DataVersionError unless ``folder`` holds what ``recorded`` records."""
    entry = recorded.output()
    if recorded.md5 is not None and entry.get("md5") != recorded.md5:
        raise DataVersionError(
            f"{recorded.dvc_file} records {entry.get('md5')}, not the expected {recorded.md5}"
        )
    tracked = recorded.tracked_folder()
    if not folder.resolve().is_relative_to(tracked.resolve()):
        raise DataVersionError(
            f"{folder} is not inside {tracked}, which {recorded.dvc_file} records"
        )
    if not folder.is_dir():
        raise DataVersionError(
            f"{folder}: no such folder; fetch it with `dvc pull {recorded.dvc_file}`"
        )
    changes = changed_files(folder, recorded.dvc_file)
    if changes:
        listed = "; ".join(changes[:LISTED_CHANGES])
        more = len(changes) - LISTED_CHANGES
        raise DataVersionError(
            f"{folder} differs from the version {recorded.dvc_file} records ({listed}"
            + (f"; and {more} more" if more > 0 else "")
            + f"). Nothing was read and {recorded.dvc_file} is unchanged. Discard the change with "
            f"`dvc checkout --force {recorded.dvc_file}`, or record it as a new version with "
            f"`dvc add {tracked}` and run the pipeline again (the data gate checks it)."
        )
