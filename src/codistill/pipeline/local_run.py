"""The whole Kubeflow pipeline on this machine, every task a subprocess (kfp.local)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from codistill.pipeline.generated import load_pipeline_module
from codistill.stages import STAGES


def _newest_run(pipeline_root: Path, before: set[Path]) -> Path:
    runs = [p for p in pipeline_root.iterdir() if p.is_dir() and p not in before]
    if not runs:
        raise RuntimeError(f"{pipeline_root}: the local run left no output folder")
    return max(runs, key=lambda p: p.stat().st_mtime)


def stage_artifacts(run_dir: Path) -> dict[str, Path]:
    """Each stage's output artifact folder inside one local run's output folder."""
    found = {}
    for stage in STAGES:
        matches = sorted(run_dir.glob(f"{stage.name}*/{stage.output.name}"))
        if not matches:
            raise RuntimeError(f"{run_dir}: no {stage.output.name} artifact from {stage.name}")
        found[stage.name] = matches[-1]
    return found


def run_local_pipeline(
    root: Path, raw_data: Path, params: Path, profile: str, workspace: Path
) -> dict[str, Any]:
    """Run the compiled-from-source pipeline with SubprocessRunner; return where things went."""
    from kfp import local

    if not raw_data.is_dir():
        raise FileNotFoundError(f"{raw_data}: no raw dataset folder")
    pipeline_root = (workspace / "outputs").resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        workspace_root=str((workspace / "workspace").resolve()),
    )
    module = load_pipeline_module(root)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The project image is not named "python"; locally the tasks run in this interpreter.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Kubernetes-only settings (GPUs, volumes, secrets) have no meaning in a subprocess.
        warnings.filterwarnings("ignore", message=".*ignored.*local.*", category=UserWarning)
        module.codistill_pipeline(
            raw_data_uri=str(raw_data.resolve()),
            params_yaml=params.read_text(),
            profile=profile,
            gpu_limit=1,
            checkpoint_root="",
        )
    seconds = time.perf_counter() - started
    run_dir = _newest_run(pipeline_root, before)
    return {"seconds": seconds, "run_dir": run_dir, "artifacts": stage_artifacts(run_dir)}
