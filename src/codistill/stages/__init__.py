"""The stage registry: every pipeline step declared once, for the CLI, DVC and Kubeflow."""

from __future__ import annotations

from codistill.stage_result import StageFailedError, StageSummary
from codistill.stages.definitions import DATA, STAGES
from codistill.stages.spec import ArtifactSpec, Input, OutFile, Stage


def get_stage(name: str) -> Stage:
    """The stage called ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r} (stages: {', '.join(s.name for s in STAGES)})")


def artifacts() -> dict[str, ArtifactSpec]:
    """Every artifact by name: the raw data source and each stage's output."""
    return {DATA.name: DATA, **{stage.output.name: stage.output for stage in STAGES}}


def producers() -> dict[str, str]:
    """The stage that writes each artifact (the raw data has none)."""
    return {stage.output.name: stage.name for stage in STAGES}


def stage_edges() -> set[tuple[str, str]]:
    """(upstream, downstream) pairs between stages, from the artifacts they pass."""
    made_by = producers()
    return {
        (made_by[name], stage.name)
        for stage in STAGES
        for name in stage.input_names
        if name in made_by
    }


__all__ = [
    "DATA",
    "STAGES",
    "ArtifactSpec",
    "Input",
    "OutFile",
    "Stage",
    "StageFailedError",
    "StageSummary",
    "artifacts",
    "get_stage",
    "producers",
    "stage_edges",
]
