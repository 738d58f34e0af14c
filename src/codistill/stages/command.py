"""The command line of a registered stage: its sub-command's options, and running it.

Kept apart from the rest of the ``codistill`` command, since it is part of what each stage
runs (its DVC code dependencies), while the tools beside the stages are not.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from codistill.config.loader import load_yaml_mapping
from codistill.lineage.runs import PIPELINE_RUN_ENV
from codistill.stages import Stage, artifacts


def run_registered_stage(args: argparse.Namespace) -> int:
    """Run the stage a parsed sub-command names, with its paths, versions and options."""
    from codistill.stages.data_version import RecordedVersion
    from codistill.stages.runner import run_stage

    stage: Stage = args.stage
    paths = {name: getattr(args, name) for name in (*stage.input_names, "out")}
    versions = {
        name: RecordedVersion(dvc_file, getattr(args, f"{name}_version_md5"))
        for name in stage.input_names
        if (dvc_file := getattr(args, f"{name}_version", None)) is not None
    }
    summary = run_stage(
        stage.name,
        load_yaml_mapping(args.params),
        paths,
        versions=versions,
        params_source=str(args.params),
        profile=args.profile,
        checkpoint_dir=getattr(args, "checkpoint_dir", None),
        nproc=getattr(args, "nproc", 1),
        pipeline_run=args.pipeline_run,
    )
    if summary.message:
        print(summary.message)
    return 0


def add_stage_command(commands: argparse._SubParsersAction, stage: Stage) -> None:
    """Add ``stage``'s sub-command: its input and output folders, params and options."""
    sub = commands.add_parser(stage.name, help=stage.description, description=stage.description)
    add_params_option(sub)
    sub.add_argument("--profile", help="run under this profile instead of params.yaml's")
    known = artifacts()
    for name in stage.input_names:
        sub.add_argument(f"--{name}", type=Path, required=True, help=f"input artifact: {name}")
        if known[name].version_file:
            sub.add_argument(
                f"--{name}-version",
                type=Path,
                metavar="DVC_FILE",
                help=f"fail unless --{name} holds what this file records "
                f"(e.g. {known[name].version_file})",
            )
            sub.add_argument(
                f"--{name}-version-md5",
                metavar="MD5",
                help=f"fail unless --{name}-version records this hash",
            )
    sub.add_argument(
        "--out", type=Path, required=True, help=f"output artifact folder: {stage.output.name}"
    )
    sub.add_argument(
        "--pipeline-run",
        default=os.environ.get(PIPELINE_RUN_ENV),
        help="key of the pipeline run whose MLflow parent run this stage joins",
    )
    if stage.resumable:
        sub.add_argument(
            "--checkpoint-dir", type=Path, help="where last.pt lives (default: the output folder)"
        )
    if stage.accelerated:
        sub.add_argument(
            "--nproc", type=int, default=1, help="processes (GPUs) to run through torchrun"
        )
    sub.set_defaults(run=run_registered_stage, stage=stage)


def add_params_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--params`` (default: params.yaml)."""
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="parameters file (default: params.yaml)",
    )
