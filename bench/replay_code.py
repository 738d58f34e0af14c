"""Show that a change to the weight-shaping code trains bit-identical weights, and record it.

    python bench/replay_code.py --from COMMIT [--regime cpu-640] [--iterations 16]

Trains one short run per method with the code of ``COMMIT`` (a git worktree) and with the
present working tree, each with its own ``params.yaml`` under the regime's overrides, the
same seed, prepared data and thread count, through the ``codistill train`` command. If every
student's ``weights_sha256`` matches, the pair of code digests is appended to
``bench/results/code_equivalence.json`` and the study's results made with either code count
for both; otherwise the differences are printed and nothing is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codistill.config import ROLES
from codistill.study.code_equivalence import EQUIVALENCE_FILE, append_record
from codistill.study.provenance import cpu_model, git_commit
from codistill.study.settings import bench_mapping, load_studies
from quality import MAIN

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Side:
    """One version of the code: its ``src`` folder and the ``params.yaml`` it runs with."""

    name: str
    src: Path
    params: Path


def _python(side: Side, args: list[str], threads: int) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(side.src),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=False
    )


def code_digest_of(side: Side) -> str:
    """The weight-shaping code digest of ``side``, computed by its own code."""
    probe = (
        "import codistill, json\n"
        "from codistill.engine.code_digest import code_digest\n"
        "print(json.dumps({'file': codistill.__file__, 'digest': code_digest()}))\n"
    )
    result = _python(side, ["-c", probe], threads=1)
    if result.returncode != 0:
        raise SystemExit(f"{side.name}: could not import its code:\n{result.stderr}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(answer["file"]).resolve().is_relative_to(side.src.resolve()):
        raise SystemExit(f"{side.name}: imported {answer['file']}, not the code in {side.src}")
    return answer["digest"]


def train(
    side: Side,
    overrides: dict[str, Any],
    prepared: Path,
    validation: Path,
    out: Path,
    threads: int,
) -> dict[str, str]:
    """Train one run with ``side``'s code and parameters; both students' weight digests."""
    import yaml

    params = bench_mapping(side.params, overrides)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: nothing to resume from
    out.mkdir(parents=True)
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    command = ["-m", "codistill.cli", "train", "--params", str(params_file)]
    command += ["--prepared", str(prepared), "--validation", str(validation), "--out", str(out)]
    result = _python(side, command, threads)
    if result.returncode != 0:
        raise SystemExit(f"{side.name}: training failed:\n{result.stdout}\n{result.stderr}")
    return json.loads((out / "train_metrics.json").read_text())["weights_sha256"]


def replay(
    old: Side,
    new: Side,
    overrides: dict[str, Any],
    methods: list[str],
    paths: dict[str, Path],
    threads: int,
) -> dict[str, dict[str, dict[str, str]]]:
    """Each method's weight digests under each side, trained alike.

    ``paths`` holds the prepared data, its validation report and the work folder.
    """
    digests: dict[str, dict[str, dict[str, str]]] = {}
    for method in methods:
        for side in (old, new):
            started = time.perf_counter()
            digests.setdefault(method, {})[side.name] = train(
                side,
                {**overrides, "train.method": method},
                paths["prepared"],
                paths["validation"],
                paths["workdir"] / side.name / method,
                threads,
            )
            print(
                f"{method} with the {side.name} code: {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return digests


def mismatches(digests: dict[str, dict[str, dict[str, str]]]) -> list[str]:
    """``method role`` for each student whose weights differ between the two codes."""
    return [
        f"{method} {role}"
        for method, sides in digests.items()
        for role in ROLES
        if len({weights[role] for weights in sides.values()}) != 1
    ]


def resolved_commit(name: str, flag: str) -> str:
    """The full hash of commit ``name``; exits naming ``flag`` when it is not a commit here."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", f"{name}^{{commit}}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        raise SystemExit(f"{flag} {name}: not a commit of this repository")
    return resolved.stdout.strip()


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A temporary git worktree of ``commit``."""
    with tempfile.TemporaryDirectory(prefix="codistill-replay-") as tmp:
        folder = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield folder
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(folder)],
                cwd=REPO_ROOT,
                check=False,
                capture_output=True,
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="commit", required=True, help="the earlier code's commit")
    parser.add_argument("--regime", help="a regime of bench/studies.yaml (default: the first)")
    parser.add_argument("--studies", type=Path, default=Path("bench/studies.yaml"))
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=[v.method for v in MAIN])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/replay"))
    parser.add_argument("--record", type=Path, default=EQUIVALENCE_FILE)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    regimes = load_studies(args.studies)["regimes"]
    regime = args.regime or next(iter(regimes))
    if regime not in regimes:
        raise SystemExit(f"{args.studies}: no regime {regime!r} (found: {', '.join(regimes)})")
    overrides = {
        **regimes[regime].get("params", {}),
        "train.iterations": args.iterations,
        "train.checkpoint_every": max(1, args.iterations // 2),
        "train.seed": args.seed,
    }
    new = Side("present", REPO_ROOT / "src", REPO_ROOT / "params.yaml")
    commit = resolved_commit(args.commit, "--from")
    with worktree(commit) as tree:
        old = Side("earlier", tree / "src", tree / "params.yaml")
        codes = {side.name: code_digest_of(side) for side in (old, new)}
        if codes["earlier"] == codes["present"]:
            print(f"{commit[:12]} and the present tree have the same code digest: nothing to show")
            return
        paths = {"prepared": args.prepared, "validation": args.validation}
        paths["workdir"] = args.workdir
        digests = replay(old, new, overrides, args.methods, paths, args.threads)
    different = mismatches(digests)
    if different:
        raise SystemExit(f"weights differ ({', '.join(different)}): nothing recorded")
    present = git_commit()
    append_record(
        {
            "from": codes["earlier"],
            "to": codes["present"],
            "from_commit": commit,
            "to_commit": present["commit"],
            "to_dirty": present["dirty"],
            "regime": regime,
            "overrides": overrides,
            "threads": args.threads,
            "weights_sha256": {m: sides["present"] for m, sides in digests.items()},
            "machine": {"cpu": cpu_model(), "torch": torch.__version__},
            "date": time.strftime("%Y-%m-%d"),
        },
        args.record,
    )
    print(f"same weights for {', '.join(args.methods)}: recorded in {args.record}")


if __name__ == "__main__":
    main()
