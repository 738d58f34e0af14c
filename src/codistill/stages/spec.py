"""The shape of a stage declaration: its function, artifacts and the parameters it reads."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from codistill.stage_result import StageSummary

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


StageFunction = Callable[..., StageSummary]


@dataclass(frozen=True)
class Stage:
    """One pipeline step, declared once for the CLI, ``dvc.yaml`` and the Kubeflow pipeline.

    ``entry`` names the function that does the work as ``module:function``; it is imported
    only when the stage runs. ``function(params, **inputs, out=...)`` returns a
    ``StageSummary``. ``params`` lists the top-level ``params.yaml`` keys it reads (or dotted
    sub-keys); ``codistill pipeline dvc`` adds the profile sections that override them, and
    the code the entry point's module imports (``code_deps``). ``resumable`` stages also take
    ``checkpoint_dir``; ``accelerated`` ones run on GPU nodes, one process per GPU through
    torchrun.
    """

    name: str
    description: str
    entry: str
    inputs: tuple[Input, ...]
    output: ArtifactSpec
    params: tuple[str, ...]
    resumable: bool = False
    accelerated: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the artifacts this stage reads, in declaration order."""
        return tuple(item.artifact for item in self.inputs)

    @property
    def module(self) -> str:
        """The entry point's module."""
        return self.entry.partition(":")[0]

    def load(self) -> StageFunction:
        """The entry point's function (importing its module, and the libraries it needs)."""
        return getattr(importlib.import_module(self.module), self.entry.partition(":")[2])
