"""Each stage's code dependencies: the project's source files its entry point can import.

Derived, not typed by hand, so that ``dvc repro`` re-runs a stage whenever code it runs
changes. The seeds are the stage's command line (``stages/command.py``, not the rest of the
``codistill`` command, whose tools shape no stage's outputs), the stage runner and the module
of the stage's entry point (``codistill.<package>.stage``); the closure follows
every import of every reached module (at any depth, functions included), plus the package
``__init__`` files that importing a module executes. It over-approximates, which costs at most
a re-run.
"""

from __future__ import annotations

from pathlib import Path

from codistill.imports import PACKAGE_ROOT, import_closure, module_file

RUNNER_MODULE = "codistill.stages.runner"
COMMAND_MODULE = "codistill.stages.command"


def compact(files: set[Path], root: Path = PACKAGE_ROOT) -> list[Path]:
    """``files``, each folder below ``root`` whose ``.py`` files all are among them as one entry.

    The entry is the outermost such folder.
    """
    folders = {parent for path in files for parent in path.parents if root in parent.parents}
    whole = {folder for folder in folders if set(folder.rglob("*.py")) <= files}
    outer = {folder for folder in whole if not any(p in whole for p in folder.parents)}
    loose = {path for path in files if not any(folder in path.parents for folder in outer)}
    return sorted(outer | loose, key=lambda path: path.relative_to(root).as_posix())


def stage_code(entry: str, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The files and folders of the package that a stage with entry point ``entry`` runs.

    The seeds are the stage's command line, the stage runner and the entry point's module
    (``module:function``).
    """
    module = entry.partition(":")[0]
    if module_file(module, root) is None:
        raise ValueError(f"{entry}: no module {module} in {root}")
    seeds = {COMMAND_MODULE, RUNNER_MODULE, module}
    return compact(import_closure(seeds, root), root)
