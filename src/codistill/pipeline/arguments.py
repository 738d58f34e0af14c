"""The ``codistill pipeline`` sub-commands and their options."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``dvc``, ``compile``, ``params`` and ``run`` under ``codistill pipeline``."""
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("dvc", "Write dvc.yaml from the stage registry."),
        ("compile", "Write components/*.yaml and pipelines/codistill_pipeline.yaml."),
    ):
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--check",
            action="store_true",
            help="write nothing; exit 1 if the committed files differ from fresh ones",
        )
        sub.add_argument("--root", type=Path, default=Path("."), help="project root")
    check = actions.add_parser(
        "params",
        help="Check params.yaml: every key known, every value in range, under every profile.",
    )
    check.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    run = actions.add_parser("run", help="Run the Kubeflow pipeline.")
    run.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="run every task as a local subprocess (kfp.local.SubprocessRunner)",
    )
    run.add_argument("--raw-data", type=Path, required=True, help="raw dataset folder")
    run.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters file")
    run.add_argument("--profile", default="cpu", help="parameters profile (default: cpu)")
    run.add_argument(
        "--workspace",
        type=Path,
        default=Path("build/kfp-local"),
        help="folder for the task outputs (default: build/kfp-local)",
    )
    run.add_argument("--root", type=Path, default=Path("."), help="project root")
