"""``dvc.yaml`` rendered from the stage registry, with the project's metrics and plots."""

from __future__ import annotations

from typing import Any

import yaml

from codistill.config import ROLES, RUN_ONLY_KEYS, TERM_NAMES
from codistill.config.schema import PROFILE_KEYS, value_keys
from codistill.imports import PACKAGE_ROOT, import_closure
from codistill.stages import STAGES, ArtifactSpec, Stage, artifacts
from codistill.stages.code_deps import compact, stage_code

HEADER = (
    "# Generated from the stage registry (codistill.stages) by `codistill pipeline dvc`.\n"
    "# Do not edit: change the registry and run the command again.\n"
)

# The hash a data source's ``.dvc`` file records, read as a ``dvc.yaml`` variable.
RECORDED_MD5 = "${outs[0].md5}"

PLOTS: list[Any] = [
    {
        "training_loss": {
            "template": "linear",
            "x": "iteration",
            "y": {"build/train/curves.csv": ["loss_total", "loss_sup"]},
        }
    },
    {
        "distillation_terms": {
            "template": "linear",
            "x": "iteration",
            "y": {"build/train/curves.csv": [f"loss_{name}" for name in TERM_NAMES]},
        }
    },
    *(
        {
            f"per_class_iou_{role}": {
                "template": "bar_horizontal",
                "x": role,
                "y": {"build/eval/per_class_iou.csv": "class"},
            }
        }
        for role in ROLES
    ),
    "build/eval/per_class_iou.png",
    "build/eval/overlays.png",
]


def _out_entries(spec: ArtifactSpec, metrics: bool) -> list[Any]:
    """The stage's DVC outs (or metrics), each ``persist``-ed.

    Every stage replaces its outputs only once it has finished them, so DVC must not delete
    them before running it: a stage that fails (a bad ``params.yaml``) or is killed leaves the
    previous outputs, cached or not, in place.
    """
    if not spec.files:
        if metrics:
            return []
        return [{spec.path: {"persist": True, **({} if spec.cache else {"cache": False})}}]
    return [
        {
            f"{spec.path}/{item.name}": {
                "persist": True,
                **({} if item.cache else {"cache": False}),
            }
        }
        for item in spec.files
        if item.metric == metrics
    ]


def _tracked(keys: tuple[str, ...], section: dict[str, Any]) -> list[str]:
    """Each value that ``section`` sets under ``keys``, less the run-only knobs."""
    return [leaf for key in keys for leaf in value_keys(key, section) if leaf not in RUN_ONLY_KEYS]


def stage_params(stage: Stage, params: dict[str, Any]) -> list[str]:
    """The stage's values in ``params.yaml``, and the selector and each profile value over one.

    One entry per value (``train.iterations``, not ``train``), so that a change reruns only
    the stages that read it; the run-only knobs (``RUN_ONLY_KEYS``) rerun nothing.
    """
    base = {key: value for key, value in params.items() if key not in PROFILE_KEYS}
    overrides = [
        f"profiles.{name}.{leaf}"
        for name, section in (params.get("profiles") or {}).items()
        for leaf in _tracked(stage.params, section or {})
    ]
    return [*_tracked(stage.params, base), *(["profile"] if overrides else []), *overrides]


def code_paths(stage: Stage) -> list[str]:
    """The stage's code dependencies (derived from its imports), relative to the project."""
    return [
        f"src/{path.relative_to(PACKAGE_ROOT.parent).as_posix()}"
        for path in stage_code(stage.entry)
    ]


def _dependencies(spec: ArtifactSpec, files: tuple[str, ...]) -> list[str]:
    """What DVC watches of one input: the folder or its ``files``; nothing of a data source.

    A stage that read a data source's folder as a dependency would let ``dvc repro`` record
    any change there as a new data version; it sees the recorded hash on its command line
    instead (``RECORDED_MD5``) and checks the folder itself (``codistill.stages.data_version``).
    """
    if spec.version_file:
        return []
    return [f"{spec.path}/{name}" for name in files] if files else [spec.path]


def _stage_entry(
    stage: Stage, known: dict[str, ArtifactSpec], params: dict[str, Any]
) -> dict[str, Any]:
    flags = [f"--{item.artifact} {known[item.artifact].path}" for item in stage.inputs]
    flags += [
        f"--{item.artifact}-version {known[item.artifact].version_file} "
        f"--{item.artifact}-version-md5 {RECORDED_MD5}"
        for item in stage.inputs
        if known[item.artifact].version_file
    ]
    deps = [
        path for item in stage.inputs for path in _dependencies(known[item.artifact], item.files)
    ]
    entry: dict[str, Any] = {
        "cmd": " ".join(["codistill", stage.name, *flags, f"--out {stage.output.path}"]),
        "deps": [*deps, *code_paths(stage)],
        "params": stage_params(stage, params),
        "outs": _out_entries(stage.output, metrics=False),
    }
    metrics = _out_entries(stage.output, metrics=True)
    if metrics:
        entry["metrics"] = metrics
    return entry


# A stage that reads the whole of ``params.yaml``: any edit runs it (in a second), so a key
# that no stage tracks, a typo among them, fails ``dvc repro`` instead of changing nothing.
PARAMS_CHECK = "params"
PARAMS_CHECK_MODULE = "codistill.config.schema"


def params_check_entry() -> dict[str, Any]:
    """The ``params`` stage: ``codistill pipeline params`` on the whole file; no outputs."""
    code = compact(import_closure({PARAMS_CHECK_MODULE}, PACKAGE_ROOT), PACKAGE_ROOT)
    return {
        "cmd": "codistill pipeline params --params params.yaml",
        "deps": [f"src/{path.relative_to(PACKAGE_ROOT.parent).as_posix()}" for path in code],
        "params": [{"params.yaml": None}],
    }


def version_files() -> list[str]:
    """The ``.dvc`` files of the data sources, read as ``dvc.yaml`` variables."""
    return sorted({spec.version_file for spec in artifacts().values() if spec.version_file})


def metric_files() -> list[str]:
    """Every file a stage declares as a metric."""
    return [
        f"{stage.output.path}/{item.name}"
        for stage in STAGES
        for item in stage.output.files
        if item.metric
    ]


def render_dvc_yaml(params: dict[str, Any]) -> str:
    """The full text of ``dvc.yaml`` for the mapping of ``params.yaml``."""
    known = artifacts()
    sources = version_files()
    if len(sources) > 1:  # each would define the same top-level variable, ``outs``
        raise ValueError(f"one data source's .dvc file can be read as variables, not {sources}")
    document = {
        **({"vars": sources} if sources else {}),
        "stages": {
            PARAMS_CHECK: params_check_entry(),
            **{stage.name: _stage_entry(stage, known, params) for stage in STAGES},
        },
        "metrics": metric_files(),
        "plots": PLOTS,
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)
