"""Kubeflow components generated from the stage registry, one YAML file per stage.

Each component is a lightweight Python component whose body calls ``run_component`` in the
project's image, so it runs on a cluster and under ``kfp.local.SubprocessRunner`` alike.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

from codistill import __version__
from codistill.stages import STAGES, Stage, artifacts

COMPONENT_IMAGE = f"ghcr.io/codistill/codistill:{__version__}"
COMPONENT_HEADER = (
    "# Generated from codistill.stages by `codistill pipeline compile`; do not edit.\n"
)


def component_source(stage: Stage) -> str:
    """The Python source of the component function for ``stage``."""
    known = artifacts()
    inputs = [f"    {name}: Input[{known[name].kind}]," for name in stage.input_names]
    output = stage.output
    options = []
    if stage.resumable:
        options.append('    checkpoint_root: str = "",')
    if stage.accelerated:
        options.append("    nproc: int = 1,")
    paths = ", ".join(f'"{name}": {name}.path' for name in stage.input_names)
    extra = "".join(
        f"        {name}={name},\n"
        for name, wanted in (("checkpoint_root", stage.resumable), ("nproc", stage.accelerated))
        if wanted
    )
    return (
        "from kfp.dsl import Artifact, Dataset, Input, Model, Output\n\n\n"
        f"def {stage.name}(\n"
        + "\n".join(inputs)
        + f"\n    {output.name}: Output[{output.kind}],\n"
        "    params_yaml: str,\n"
        "    profile: str,\n"
        "    pipeline_run: str,\n" + "".join(f"{line}\n" for line in options) + "):\n"
        f'    """{stage.description}"""\n'
        "    from codistill.pipeline.component_entry import run_component\n\n"
        "    run_component(\n"
        f'        "{stage.name}",\n'
        "        params_yaml=params_yaml,\n"
        "        profile=profile,\n"
        "        pipeline_run=pipeline_run,\n"
        f'        paths={{{paths}{", " if paths else ""}"out": {output.name}.path}},\n'
        + extra
        + "    )\n"
    )


def _component(stage: Stage, workdir: Path) -> object:
    from kfp import dsl

    path = workdir / f"{stage.name}_component.py"
    path.write_text(component_source(stage))
    spec = importlib.util.spec_from_file_location(f"codistill_component_{stage.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        function = getattr(module, stage.name)
        return dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)(function)
    finally:
        del sys.modules[spec.name]


def write_components(folder: str | Path) -> list[Path]:
    """Compile one component YAML per stage into ``folder``; return the files written."""
    from kfp import compiler

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="codistill-components-") as tmp:
        for stage in STAGES:
            target = folder / f"{stage.name}.yaml"
            compiler.Compiler().compile(_component(stage, Path(tmp)), str(target))
            target.write_text(COMPONENT_HEADER + target.read_text())
            written.append(target)
    return written
