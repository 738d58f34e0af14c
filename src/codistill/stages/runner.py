"""Run one registered stage: in process, or on every GPU through torchrun, inside its lineage."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from codistill.config import Params, parse_params
from codistill.stage_result import StageSummary
from codistill.stages import STAGES, get_stage
from codistill.stages.data_version import RecordedVersion, require_recorded_version


def is_torchrun_worker() -> bool:
    """True inside a process that torchrun started (it sets the elastic run id)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _torchrun(
    name: str,
    raw_params: dict,
    paths: dict[str, Path],
    checkpoint_dir: Path | None,
    nproc: int,
    env: dict[str, str],
) -> None:
    with tempfile.TemporaryDirectory(prefix="codistill-params-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw_params, sort_keys=False))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "codistill.cli",
            name,
            "--params",
            str(params_file),
            *(arg for key, path in paths.items() for arg in (f"--{key}", str(path))),
        ]
        if checkpoint_dir is not None:
            command += ["--checkpoint-dir", str(checkpoint_dir)]
        print(f"{name}: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True, env={**os.environ, **env})


def _path_params(paths: dict[str, Path]) -> dict[str, str]:
    """Where the stage read and wrote, as stage-run parameters."""
    return {f"path.{name}": str(Path(path).resolve()) for name, path in paths.items()}


class _NoLineage:
    """Stands in for the stage run when tracking is off."""

    def __init__(self) -> None:
        self.environment: dict[str, str] = {}

    def record(self, summary: StageSummary) -> None:
        """Nothing to record."""


@contextmanager
def _lineage(
    params: Params, raw_params: dict, stage: str, pipeline_run: str | None
) -> Iterator[Any]:
    if not params.tracking.enabled:
        yield _NoLineage()
        return
    from codistill.lineage.runs import stage_run

    with stage_run(params, raw_params, stage, pipeline_run, stage == STAGES[-1].name) as run:
        yield run


def run_stage(
    name: str,
    raw_params: dict,
    paths: dict[str, Path],
    *,
    params_source: str = "params.yaml",
    profile: str | None = None,
    checkpoint_dir: Path | None = None,
    nproc: int = 1,
    pipeline_run: str | None = None,
    versions: dict[str, RecordedVersion] | None = None,
) -> StageSummary:
    """Run stage ``name`` on ``paths`` (its inputs and ``out``) and return its summary.

    ``raw_params`` is the parameters mapping as read from YAML; ``profile`` overrides its
    profile. With tracking on, the stage logs into a nested MLflow run under the pipeline
    run's parent (see ``codistill.lineage.runs``). An accelerated stage with ``nproc`` > 1
    re-launches itself through torchrun, one process per GPU. ``versions`` maps an input to
    the DVC record it must match; a mismatch stops the stage before it reads or writes
    anything.
    """
    stage = get_stage(name)
    for input_name, recorded in (versions or {}).items():
        require_recorded_version(Path(paths[input_name]), recorded)
    if profile:
        raw_params = {**raw_params, "profile": profile}
    params: Params = parse_params(raw_params, params_source)
    extra = {"checkpoint_dir": checkpoint_dir} if stage.resumable else {}
    function = stage.load()
    if is_torchrun_worker():  # the launching process keeps the lineage
        return function(params, **paths, **extra)
    with _lineage(params, raw_params, stage.name, pipeline_run) as lineage:
        if stage.accelerated and nproc > 1:
            _torchrun(name, raw_params, paths, checkpoint_dir, nproc, lineage.environment)
            summary = StageSummary(f"{name}: {nproc} torchrun processes finished")
        else:
            with _environment(lineage.environment):
                summary = function(params, **paths, **extra)
        lineage.record(replace(summary, params={**summary.params, **_path_params(paths)}))
    return summary
