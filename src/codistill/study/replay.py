"""Show that two versions of the code train the same weights, and record what was shown.

``codistill study replay --from COMMIT`` trains every weight-shaping setting the committed
results use (``replay_configurations``), past its longest warm-up at a small crop, with the
code of ``COMMIT`` (a git worktree) and with the present working tree, each with its own
``params.yaml``, the same seed, prepared data and thread count, through ``codistill train``.
If every student's ``weights_sha256`` matches, the pair of code digests is appended to
``bench/results/code_equivalence.json`` with the numeric modes it ran in, and results made
in those modes with either code count for both; otherwise nothing is recorded.

``codistill study reproduce --regime R --key K`` is the end-to-end check: the whole schedule
of a committed run (its overrides and seed over that commit's ``params.yaml``), trained with a
commit's code, must end with the committed ``weights_sha256``; the outcome, match or not, is
appended to ``bench/results/reproductions.json``. If ``params.yaml`` changed since the run in
a way that shapes weights, a mismatch can be that.
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

from codistill.artifacts import write_json_atomic
from codistill.config import ROLES
from codistill.study.code_equivalence import REPRODUCTIONS_FILE, append_record
from codistill.study.plan import PlanError
from codistill.study.provenance import cpu_model, git_commit
from codistill.study.replay_configurations import (
    REPLAY_GEOMETRY,
    configurations_in_use,
    replay_iterations,
)
from codistill.study.results import result_path
from codistill.study.settings import bench_mapping


class ReplayError(RuntimeError):
    """Two codes trained different weights, or a side could not train at all."""


def repository_root() -> Path:
    """The top folder of the git repository the command runs in."""
    found = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise PlanError("not inside a git repository: replays check out earlier commits")
    return Path(found.stdout.strip())


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


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
        raise ReplayError(f"{side.name}: could not import its code: {_last_line(result.stderr)}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(answer["file"]).resolve().is_relative_to(side.src.resolve()):
        raise ReplayError(f"{side.name}: imported {answer['file']}, not the code in {side.src}")
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
        raise ReplayError(
            f"{side.name}: training failed: {_last_line(result.stderr or result.stdout)}"
        )
    return json.loads((out / "train_metrics.json").read_text())["weights_sha256"]


def replay(
    old: Side,
    new: Side,
    configurations: dict[str, dict[str, Any]],
    paths: dict[str, Path],
    threads: int,
) -> dict[str, dict[str, dict[str, str]]]:
    """Each configuration's weight digests under each side, trained alike.

    ``paths`` holds the prepared data, its validation report and the work folder.
    """
    digests: dict[str, dict[str, dict[str, str]]] = {}
    for name, overrides in configurations.items():
        for side in (old, new):
            started = time.perf_counter()
            digests.setdefault(name, {})[side.name] = train(
                side,
                overrides,
                paths["prepared"],
                paths["validation"],
                paths["workdir"] / side.name / name,
                threads,
            )
            print(
                f"{name} with the {side.name} code: {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return digests


def trained_modes(workdir: Path, configurations: dict[str, dict[str, Any]]) -> list[str]:
    """The numeric modes the replay's trainings ran in, as each recorded it; both sides agree.

    A mode names its device too (``float32`` on a CPU, ``cuda-…`` on a GPU), so a replay on a
    GPU host never vouches for CPU arithmetic.
    """
    modes = set()
    for name in configurations:
        metrics = [
            json.loads((workdir / side / name / "train_metrics.json").read_text())
            for side in ("earlier", "present")
        ]
        found = {(m["precision"], m["device"]) for m in metrics}
        if len(found) != 1:
            raise ReplayError(f"{name}: the two codes trained in different modes ({found})")
        precision, device = found.pop()
        modes.add(precision if device == "cpu" else f"{device}-{precision}")
    return sorted(modes)


def mismatches(digests: dict[str, dict[str, dict[str, str]]]) -> list[str]:
    """``configuration role`` for each student whose weights differ between the two codes."""
    return [
        f"{name} {role}"
        for name, sides in digests.items()
        for role in ROLES
        if len({weights[role] for weights in sides.values()}) != 1
    ]


def resolved_commit(name: str, flag: str) -> str:
    """The full hash of commit ``name``; exits naming ``flag`` when it is not a commit here."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", f"{name}^{{commit}}"],
        cwd=repository_root(),
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        raise PlanError(f"{flag} {name}: not a commit of this repository")
    return resolved.stdout.strip()


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A temporary git worktree of ``commit``."""
    with tempfile.TemporaryDirectory(prefix="codistill-replay-") as tmp:
        folder = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), commit],
            cwd=repository_root(),
            check=True,
            capture_output=True,
        )
        try:
            yield folder
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(folder)],
                cwd=repository_root(),
                check=False,
                capture_output=True,
            )


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


def replay_code(args: argparse.Namespace) -> int:
    """Train every setting in use, past its warm-ups, with both codes; record the link if equal."""
    root = repository_root()
    new = Side("present", root / "src", root / "params.yaml")
    configurations = {}
    for name, setting in configurations_in_use(args.results, new.params).items():
        steps = replay_iterations(setting, new.params)
        configurations[name] = {
            **setting,
            **REPLAY_GEOMETRY,
            "train.iterations": steps,
            "train.checkpoint_every": steps,
            "train.seed": args.seed,
        }
    commit = resolved_commit(args.commit, "--from")
    with worktree(commit) as tree:
        old = Side("earlier", tree / "src", tree / "params.yaml")
        codes = {side.name: code_digest_of(side) for side in (old, new)}
        if codes["earlier"] == codes["present"]:
            print(f"{commit[:12]} and the present tree have the same code digest: nothing to show")
            return 0
        steps = sum(c["train.iterations"] for c in configurations.values())
        print(f"{len(configurations)} settings in use, {steps} steps in all", flush=True)
        paths = {"prepared": args.prepared, "validation": args.validation}
        paths["workdir"] = args.workdir
        digests = replay(old, new, configurations, paths, args.threads)
    different = mismatches(digests)
    if different:
        raise ReplayError(f"weights differ ({', '.join(different)}): nothing recorded")
    present = git_commit()
    append_record(
        {
            "from": codes["earlier"],
            "to": codes["present"],
            "from_commit": commit,
            "to_commit": present["commit"],
            "to_dirty": present["dirty"],
            "configurations": configurations,
            "precisions": trained_modes(args.workdir, configurations),
            "threads": args.threads,
            "weights_sha256": {name: sides["present"] for name, sides in digests.items()},
            "machine": {"cpu": cpu_model(), "torch": torch.__version__},
            "date": time.strftime("%Y-%m-%d"),
        },
        args.record,
    )
    print(f"same weights for all {len(configurations)} settings: recorded in {args.record}")
    return 0


def reproduce_run(args: argparse.Namespace) -> int:
    """Train a committed run's whole schedule with a commit's code; record whether it matched."""
    path = result_path(args.results / args.regime, args.key)
    if not path.is_file():
        raise PlanError(f"{path}: no committed result to reproduce")
    result = json.loads(path.read_text())
    if "weights_sha256" not in result:
        raise PlanError(f"{path}: records no weights_sha256, so there is nothing to compare with")
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
        raise ReplayError(f"{args.key}: weights differ ({', '.join(different)}); recorded")
    print(f"{args.key}: the same weights with {commit[:12]}'s code; recorded in {args.record}")
    return 0
