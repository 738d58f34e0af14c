"""Each stage's code dependencies: the project's source files its entry point can import.

Derived, not typed by hand, so that ``dvc repro`` re-runs a stage whenever code it runs
changes. The seeds are the command line, the stage runner and the module of the stage's
entry point (``codistill.<package>.stage``); the closure follows
every import of every reached module (at any depth, functions included), plus the package
``__init__`` files that importing a module executes. It over-approximates, which costs at most
a re-run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "codistill"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
RUNNER_MODULE = "codistill.stages.runner"
# The command line that runs every stage: followed by its top-level imports only, since its
# sub-commands' own imports belong to the sub-commands.
CLI_MODULE = "codistill.cli"


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of module ``name`` of the package at ``root``, if there is one."""
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, root: Path, where: str, top_level_only: bool = False) -> set[str]:
    """The package's modules that the import statements of ``tree`` name."""
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise ValueError(
                f"{where}, line {node.lineno}: a relative import; the project imports by name"
            )
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # ``from codistill.data import prepare`` may name a submodule
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if module_file(name, root) is not None}


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(
    seeds: Iterable[str], root: Path = PACKAGE_ROOT, registries: Iterable[str] = ()
) -> set[Path]:
    """The source files of ``seeds`` and of every package module they import, transitively.

    Of a ``registries`` module (one that declares functions whose imports are their own
    business, like the stage registry) only the top-level imports are followed.
    """
    registries = set(registries)
    files: set[Path] = set()
    pending = list(seeds)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        for module in _with_parents(name):
            if module in seen or (path := module_file(module, root)) is None:
                continue
            seen.add(module)
            files.add(path)
            tree = ast.parse(path.read_text())
            pending.extend(_imports(tree, root, str(path), module in registries))
    return files


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

    The seeds are the command line (followed by its top-level imports only), the stage
    runner and the entry point's module (``module:function``).
    """
    module = entry.partition(":")[0]
    if module_file(module, root) is None:
        raise ValueError(f"{entry}: no module {module} in {root}")
    seeds = {CLI_MODULE, RUNNER_MODULE, module}
    return compact(import_closure(seeds, root, {CLI_MODULE}), root)
