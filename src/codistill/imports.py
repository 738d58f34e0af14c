"""The project's own import graph, read from the source files without importing them.

Both the stages' code dependencies (``codistill.stages.code_deps``) and the digest of the
code that shapes trained weights (``codistill.engine.code_digest``) are import closures.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


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


def _imports(tree: ast.AST, root: Path, where: str) -> set[str]:
    """The package's modules that the import statements of ``tree`` name, at any depth."""
    names: set[str] = set()
    for node in ast.walk(tree):
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


def import_closure(seeds: Iterable[str], root: Path = PACKAGE_ROOT) -> set[Path]:
    """The source files of ``seeds`` and of every package module they import, transitively."""
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
            pending.extend(_imports(tree, root, str(path)))
    return files
