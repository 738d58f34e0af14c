"""What ``codistill pipeline ...`` does."""

from __future__ import annotations

import argparse
import sys

from codistill.pipeline.generated import stale_files, write_all


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Dispatch one ``codistill pipeline`` action; return the exit code."""
    if args.action == "run":
        from codistill.pipeline.local_run import run_local_pipeline

        result = run_local_pipeline(
            args.root, args.raw_data, args.params, args.profile, args.workspace
        )
        print(f"local Kubeflow run finished in {result['seconds']:.1f} s under {result['run_dir']}")
        for stage, path in result["artifacts"].items():
            print(f"  {stage}: {path}")
        return 0
    if args.action == "params":
        from codistill.config.schema import check_params_file

        profiles = check_params_file(args.params)
        under = f", as written and under profile {', '.join(profiles)}" if profiles else ""
        print(f"{args.params}: every key known and every value in range{under}")
        return 0
    if args.check:
        diffs = stale_files(args.root, args.action)
        for diff in diffs:
            print(diff)
        if diffs:
            print(
                f"generated files are stale: run `codistill pipeline {args.action}`",
                file=sys.stderr,
            )
            return 1
        print("generated files are up to date")
        return 0
    for path in write_all(args.root, args.action):
        print(f"wrote {path}")
    return 0
