"""Train one finished study run again from scratch with a given commit's code, and compare.

    python bench/reproduce_run.py --regime cpu-640 --key ours-seed0 [--commit HEAD]

The short replays of ``bench/replay_code.py`` link one code version to the next; this is the
end-to-end check: the whole schedule of a committed run (its regime overrides and seed over
that commit's ``params.yaml``), trained with that commit's code in a git worktree, through
``codistill train``, must end with the same ``weights_sha256`` as the committed result. The
outcome, match or not, is appended to ``bench/results/reproductions.json``. The parameters
are that commit's ``params.yaml`` under the run's overrides, as the study resolves them: if
``params.yaml`` changed since the run in a way that shapes weights, a mismatch can be that.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from codistill.artifacts import write_json_atomic
from codistill.config import ROLES
from codistill.study.provenance import cpu_model
from codistill.study.results import result_path
from replay_code import Side, code_digest_of, resolved_commit, train, worktree

REPRODUCTIONS_FILE = Path("bench/results/reproductions.json")


def run_overrides(result: dict[str, Any]) -> dict[str, Any]:
    """The overrides that made a committed run: its regime and variant, and its seed."""
    return {**result["overrides"], "train.seed": result["seed"]}


def differing_students(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    """The roles whose weight digests differ."""
    return [role for role in ROLES if expected[role] != got[role]]


def append_reproduction(record: dict[str, Any], path: Path = REPRODUCTIONS_FILE) -> None:
    """Add ``record`` to the reproductions file."""
    earlier = json.loads(path.read_text())["records"] if path.is_file() else []
    write_json_atomic(path, {"records": [*earlier, record]})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", required=True)
    parser.add_argument("--key", required=True, help="a committed run, e.g. ours-seed0")
    parser.add_argument("--commit", default="HEAD", help="whose code trains it (default HEAD)")
    parser.add_argument("--results", type=Path, default=Path("bench/results/quality"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/reproduce"))
    parser.add_argument("--record", type=Path, default=REPRODUCTIONS_FILE)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    path = result_path(args.results / args.regime, args.key)
    if not path.is_file():
        raise SystemExit(f"{path}: no committed result to reproduce")
    result = json.loads(path.read_text())
    if "weights_sha256" not in result:
        raise SystemExit(f"{path}: records no weights_sha256, so there is nothing to compare with")
    commit = resolved_commit(args.commit, "--commit")
    overrides = run_overrides(result)
    started = time.perf_counter()
    with worktree(commit) as tree:
        side = Side(commit[:12], tree / "src", tree / "params.yaml")
        code = code_digest_of(side)
        weights = train(
            side,
            overrides,
            args.prepared,
            args.validation,
            args.workdir / args.regime / args.key,
            args.threads,
        )
    different = differing_students(result["weights_sha256"], weights)
    append_reproduction(
        {
            "regime": args.regime,
            "key": args.key,
            "result_commit": result["commit"],
            "result_code_digest": result["code_digest"],
            "commit": commit,
            "code_digest": code,
            "overrides": overrides,
            "threads": args.threads,
            "seconds": round(time.perf_counter() - started, 1),
            "expected_weights_sha256": result["weights_sha256"],
            "weights_sha256": weights,
            "same_weights": not different,
            "machine": {"cpu": cpu_model(), "torch": torch.__version__},
            "date": time.strftime("%Y-%m-%d"),
        },
        args.record,
    )
    if different:
        raise SystemExit(f"{args.key}: weights differ ({', '.join(different)}); recorded")
    print(f"{args.key}: the same weights with {commit[:12]}'s code; recorded in {args.record}")


if __name__ == "__main__":
    main()
