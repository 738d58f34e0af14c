"""Where and with what a run was made: the commit, the machine, and the kind of machine."""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from codistill.engine.precision import FLOAT32, cpu_bf16_engine
from codistill.study.results import read_result


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the tree had changes, or ``unknown`` without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def machine(device: torch.device) -> dict[str, Any]:
    """What the run ran on: CPU, cores, threads, accelerator and versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_bf16": cpu_bf16_engine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def study_device() -> torch.device:
    """The device study runs train and score on: the GPU if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine_kind(recorded: dict[str, Any], precision: str = FLOAT32) -> str:
    """The kind of machine a ``machine`` record names, as a run in ``precision`` sees it.

    Its GPU; else, for a float32 run, any CPU (one CPU model and another differ in rounding
    only: the machine check in docs/results.md measures what that does); for a bf16
    run the CPU model and its bf16 instructions, since one model name covers CPUs with and
    without them (an AMD EPYC with ``avx512_bf16`` and one without, on which bf16 falls back to
    float32).
    """
    if str(recorded.get("device")).startswith("cuda"):
        return recorded["gpu"]
    if precision == FLOAT32:
        return "a CPU (float32)"
    name = recorded.get("cpu", "an unrecorded machine")
    return f"{name} ({recorded.get('cpu_bf16') or 'no bf16 instructions'})"


def same_machine_kind(found: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether the result ``found`` was made on the kind of machine ``here`` records."""
    precision = found.get("precision", FLOAT32)
    return machine_kind(found.get("machine", {}), precision) == machine_kind(here, precision)


def require_one_machine_kind(results: Path, device: torch.device) -> None:
    """Refuse to train into ``results`` if its runs were made on another kind of machine.

    A GPU and a CPU, or two CPUs in bf16, differ in the arithmetic itself: a study (or search)
    goes on where it started. Step times differ between CPU models too, so tables never pool
    them (``seconds_per_step``).
    """
    here = machine(device)
    for path in sorted(results.glob("*.json")):
        found = read_result(path)
        if found is not None and not same_machine_kind(found, here):
            precision = found.get("precision", FLOAT32)
            raise SystemExit(
                f"{results}: its runs were made on {machine_kind(found['machine'], precision)} "
                f"({path.name}), this machine is {machine_kind(here, precision)}: a study goes "
                "on on the kind of machine it started on; give it another results folder to "
                "run it here"
            )


def recorded_machine(recorded: dict[str, Any]) -> str:
    """A run's ``machine`` record in words: its GPU, else its CPU and cores."""
    if recorded.get("gpu"):
        return recorded["gpu"]
    cores = recorded.get("cores")
    return recorded.get("cpu", "an unrecorded machine") + (
        f", {cores} logical cores" if cores else ""
    )


def distinct_runs(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every run of ``results`` (row or candidate -> its runs) once, by its key."""
    return list({run["key"]: run for runs in results.values() for run in runs}.values())


def made_with_lines(runs: Iterable[dict[str, Any]]) -> list[str]:
    """Bullet lines: the machines, versions, numeric modes and weight-shaping code of ``runs``.

    As each result recorded them, so a table written elsewhere (from committed results)
    still says where and with what its runs were made.
    """
    runs = list(runs)
    machines = [run.get("machine", {}) for run in runs]
    return [
        f"- runs made on: {_counted(recorded_machine(m) for m in machines)}",
        "- runs' versions: "
        + _counted(f"python {m.get('python', '?')}, torch {m.get('torch', '?')}" for m in machines),
        f"- numeric mode: {_counted(run.get('precision', FLOAT32) for run in runs)}",
        "- weight-shaping code: "
        + _counted(str(run.get("code_digest", "unrecorded"))[:12] for run in runs),
    ]


def _counted(values: Iterable[str]) -> str:
    """``a (3 runs); b (1 run)``, the most frequent first; ``no runs yet`` if there are none."""
    counts = Counter(values)
    if not counts:
        return "no runs yet"
    return "; ".join(
        f"{name} ({count} run{'s' if count > 1 else ''})" for name, count in counts.most_common()
    )
