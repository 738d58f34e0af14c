"""The generated files of the project, written fresh or compared with the committed ones."""

from __future__ import annotations

import difflib
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from codistill.config.loader import load_yaml_mapping
from codistill.pipeline.dvc_yaml import render_dvc_yaml
from codistill.pipeline.kfp_components import write_components

PIPELINE_MODULE = Path("pipelines/codistill_pipeline.py")
PIPELINE_YAML = Path("pipelines/codistill_pipeline.yaml")
COMPONENTS_DIR = Path("components")
# Fields that change with the SDK release, not with the pipeline.
VOLATILE_PREFIXES = ("sdkVersion:",)


def load_pipeline_module(root: Path) -> ModuleType:
    """Import ``pipelines/codistill_pipeline.py`` afresh (it reads the component files)."""
    path = root / PIPELINE_MODULE
    spec = importlib.util.spec_from_file_location("codistill_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def compile_pipeline(root: Path, target: Path) -> Path:
    """Compile the pipeline defined under ``root`` into ``target``."""
    from kfp import compiler

    module = load_pipeline_module(root)
    compiler.Compiler().compile(module.codistill_pipeline, str(target))
    return target


def stable_text(text: str) -> list[str]:
    """The lines of a generated file without the SDK-version fields."""
    return [line for line in text.splitlines() if not line.strip().startswith(VOLATILE_PREFIXES)]


def write_all(root: Path, kind: str, source: Path | None = None) -> list[Path]:
    """Write the generated files of ``kind`` (``dvc`` or ``compile``) under ``root``.

    ``source`` (default ``root``) holds the params.yaml and the pipeline module they follow.
    """
    source = source or root
    if kind == "dvc":
        params = load_yaml_mapping(source / "params.yaml")
        (root / "dvc.yaml").write_text(render_dvc_yaml(params))
        return [root / "dvc.yaml"]
    written = write_components(root / COMPONENTS_DIR)
    (root / PIPELINE_MODULE).parent.mkdir(parents=True, exist_ok=True)
    if source != root:
        (root / PIPELINE_MODULE).write_text((source / PIPELINE_MODULE).read_text())
    return [*written, compile_pipeline(root, root / PIPELINE_YAML)]


def stale_files(root: Path, kind: str) -> list[str]:
    """Unified diffs of every committed file of ``kind`` that differs from a fresh one."""
    diffs = []
    with tempfile.TemporaryDirectory(prefix="codistill-generated-") as tmp:
        fresh_root = Path(tmp)
        for fresh in write_all(fresh_root, kind, source=root):
            relative = fresh.relative_to(fresh_root)
            committed = root / relative
            old = stable_text(committed.read_text()) if committed.is_file() else []
            new = stable_text(fresh.read_text())
            if old != new:
                diffs.append(
                    "\n".join(
                        difflib.unified_diff(
                            old, new, f"{relative} (committed)", f"{relative} (fresh)", lineterm=""
                        )
                    )
                )
    return diffs
