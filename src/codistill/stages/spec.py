"""The shape of a stage declaration: its function, artifacts and the parameters it reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("Dataset", "Model", "Artifact")


@dataclass(frozen=True)
class OutFile:
    """One file of an artifact folder that DVC tracks on its own."""

    name: str
    cache: bool = True
    metric: bool = False


@dataclass(frozen=True)
class ArtifactSpec:
    """A folder one stage writes and later stages read: a DVC out and a KFP artifact.

    ``path`` is relative to the project root and may use ``${data.dataset}``. With ``files``
    DVC tracks those files one by one (to leave some uncached); else the whole folder. A data
    source has a ``version_file`` (its ``.dvc`` file): under ``dvc repro`` the stages that read
    it are keyed to the hash that file records, and check the folder against it first.
    """

    name: str
    path: str
    kind: str
    files: tuple[OutFile, ...] = ()
    cache: bool = True
    version_file: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"artifact {self.name}: kind {self.kind!r} not in {KINDS}")


@dataclass(frozen=True)
class Input:
    """An artifact a stage reads; ``files`` narrows the DVC dependency to those files."""

    artifact: str
    files: tuple[str, ...] = ()


StageFunction = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One pipeline step, declared once for the CLI, ``dvc.yaml`` and the Kubeflow pipeline.

    ``function(params, **inputs, out=...)`` does the work and returns a summary with
    ``message`` (for the log), ``metrics`` (flat floats) and optionally ``params`` (flat
    strings) for the stage's tracking run. ``params`` lists the top-level ``params.yaml``
    keys it reads (or dotted sub-keys); ``codistill pipeline dvc`` adds the profile
    sections that override them, and the code the function imports (``code_deps``).
    ``resumable`` stages also take ``checkpoint_dir``; ``accelerated`` ones run on GPU
    nodes, one process per GPU through torchrun.
    """

    name: str
    description: str
    function: StageFunction
    inputs: tuple[Input, ...]
    output: ArtifactSpec
    params: tuple[str, ...]
    resumable: bool = False
    accelerated: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the artifacts this stage reads, in declaration order."""
        return tuple(item.artifact for item in self.inputs)
