"""What every generated Kubeflow component calls: the registered stage, on artifact paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from codistill.config import ConfigError
from codistill.config.loader import load_yaml_mapping, parse_yaml_mapping
from codistill.stages.runner import run_stage

PARAMS_ENV = "CODISTILL_PARAMS"


def component_params(params_yaml: str) -> tuple[dict, str]:
    """The parameters mapping: the given YAML text, else the image's ``$CODISTILL_PARAMS``."""
    if params_yaml.strip():
        return parse_yaml_mapping(params_yaml, "params_yaml"), "params_yaml"
    if not os.environ.get(PARAMS_ENV):
        raise ConfigError(f"params_yaml is empty and {PARAMS_ENV} names no parameters file")
    return load_yaml_mapping(os.environ[PARAMS_ENV]), os.environ[PARAMS_ENV]


def run_component(
    stage: str,
    params_yaml: str,
    profile: str,
    pipeline_run: str,
    paths: dict[str, str],
    checkpoint_root: str = "",
    nproc: int = 1,
) -> None:
    """Run ``stage`` for a Kubeflow task; checkpoints go under ``checkpoint_root/pipeline_run``."""
    raw, source = component_params(params_yaml)
    checkpoint_dir = Path(checkpoint_root) / pipeline_run if checkpoint_root else None
    summary = run_stage(
        stage,
        raw,
        {name: Path(path) for name, path in paths.items()},
        params_source=source,
        profile=profile or None,
        checkpoint_dir=checkpoint_dir,
        nproc=nproc,
        pipeline_run=pipeline_run,
    )
    print(summary.message)
    if checkpoint_dir is not None:
        # The run is complete and its weights are in the output artifact: free the volume.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
