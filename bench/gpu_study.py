"""The quality study at full resolution on a lent GPU, sized to end inside one device window.

1. Smoke: a few training steps of ``ours`` with bf16 autocast, channels-last and
   ``torch.compile``, launched through ``torchrun`` (one process); then one student exported to
   ONNX and checked against PyTorch under ONNX Runtime on the CPU.
2. Calibration (unless ``--iterations`` is given): the four methods train side by side, one
   process each on the one GPU, for a few steps; their steady-state seconds per step set the
   iteration count that lets the study end before ``--budget-s``.
3. The study: the four methods again side by side, each a run of ``bench/quality.py`` (same
   JSON results), for every seed of ``--seeds``.

Everything is written under OUT_DIR: ``gpu_study.log``, ``results/<regime>-<N>it/*.json``
and ``calibration.json``. For the tables, copy the results folder to
``bench/results/quality/`` and run ``bench/quality.py --regime <regime> --iterations N
--seeds ... --no-train --no-ablations``. Needs torch, timm, numpy, Pillow, PyYAML, tqdm, onnx
and onnxruntime only: no MLflow, DVC or Kubeflow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from codistill.config import METHODS

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="OUT_DIR: log, calibration and result JSONs")
    parser.add_argument("--regime", default="gpu-window")
    parser.add_argument("--studies", type=Path, default=HERE / "studies.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, help="skip the calibration, train this many")
    parser.add_argument("--budget-s", type=float, default=540.0, help="end within this many s")
    parser.add_argument("--calibration-steps", type=int, default=40)
    parser.add_argument("--score-reserve-s", type=float, default=60.0, help="kept for scoring")
    parser.add_argument("--max-iterations", type=int, default=40000)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra params overrides"
    )
    return parser.parse_args()


class Log:
    """Timestamped lines to the terminal and to ``gpu_study.log``."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.monotonic()

    def __call__(self, message: str) -> None:
        """Write one line, prefixed with the seconds since the start."""
        line = f"[{time.monotonic() - self.start:7.1f} s] {message}"
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start


def quality_command(args: argparse.Namespace, results: Path, workdir: Path) -> list[str]:
    """``bench/quality.py`` for this study's regime, files and overrides, without tables."""
    command = [sys.executable, str(HERE / "quality.py"), "--regime", args.regime]
    command += ["--studies", str(args.studies), "--params", str(args.params)]
    command += ["--prepared", str(args.prepared), "--validation", str(args.validation)]
    command += ["--results", str(results), "--workdir", str(workdir), "--no-tables"]
    command += ["--no-ablations", "--threads", str(max(1, (os.cpu_count() or 4) // len(METHODS)))]
    return command + (["--set", *args.set] if args.set else [])


def side_by_side(commands: dict[str, list[str]], log: Log, timeout: float) -> dict[str, int]:
    """Run the commands at once; return each one's exit status (124 if it ran out of time).

    Each runs in its own process group, so that a timeout also stops the workers it started.
    """
    processes = {}
    for name, command in commands.items():
        with (log.path.parent / f"{name}.out").open("w") as handle:
            processes[name] = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
    deadline = time.monotonic() + timeout
    codes = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(process)
            codes[name] = 124
        log(f"{name}: exit {codes[name]}")
    return codes


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM a process group, then SIGKILL it if it has not ended within 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def smoke(args: argparse.Namespace, log: Log) -> None:
    """A few compiled bf16 channels-last steps under torchrun, then export and ORT parity."""
    folder = args.out / "smoke"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=1", str(HERE / "gpu_smoke.py"), str(folder)]
    command += ["--params", str(args.params), "--prepared", str(args.prepared)]
    command += ["--set", *smoke_overrides(args), "train.method=ours", "train.iterations=3"]
    started = time.monotonic()
    code = side_by_side({"smoke": command}, log, timeout=300)["smoke"]
    if code != 0:
        tail = (args.out / "smoke.out").read_text()[-2000:]
        raise SystemExit(f"smoke failed with exit {code} (see {args.out / 'smoke.out'}):\n{tail}")
    report = json.loads((folder / "smoke.json").read_text())
    log(f"smoke passed in {time.monotonic() - started:.0f} s: {json.dumps(report)}")


def smoke_overrides(args: argparse.Namespace) -> list[str]:
    """The regime's settings (geometry, precision, compile) and ``--set``, as KEY=VALUE."""
    from codistill.study.settings import load_studies

    regime = load_studies(args.studies)["regimes"][args.regime]
    pairs = [f"{key}={json.dumps(value)}" for key, value in regime.get("params", {}).items()]
    return pairs + list(args.set)


def calibrate(args: argparse.Namespace, log: Log) -> float:
    """The slowest method's steady-state seconds per step, all four side by side."""
    folder = args.out / "calibration"
    overrides = [o for o in smoke_overrides(args) if not o.startswith("train.iterations=")]
    commands = {
        f"calibrate-{method}": [
            sys.executable,
            str(HERE / "gpu_smoke.py"),
            str(folder / method),
            "--params",
            str(args.params),
            "--prepared",
            str(args.prepared),
            "--no-export",
            "--set",
            *overrides,
            f"train.method={method}",
            f"train.iterations={args.calibration_steps}",
            f"train.log_every={max(1, args.calibration_steps // 4)}",
        ]
        for method in METHODS
    }
    codes = side_by_side(commands, log, timeout=max(60.0, args.budget_s - log.elapsed()))
    if any(codes.values()):
        raise SystemExit(f"calibration failed: {codes}")
    # the last logged window of each: after compilation and warm-up
    seconds = {
        method: json.loads((folder / method / "smoke.json").read_text())["seconds_per_step"]
        for method in METHODS
    }
    report = {"seconds_per_step": seconds, "side_by_side": len(METHODS)}
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2))
    log(f"calibration: {report}")
    return max(seconds.values())


def study_iterations(args: argparse.Namespace, log: Log, seconds_per_step: float) -> int:
    """The iteration count that ends every seed's runs before the budget."""
    left = args.budget_s - log.elapsed() - args.score_reserve_s * len(args.seeds)
    fitting = math.floor(left / len(args.seeds) / seconds_per_step / 1.25)  # compile, eval
    iterations = min(args.max_iterations, fitting // 10 * 10 if fitting >= 10 else fitting)
    if iterations < 1:
        raise SystemExit(f"only {left:.0f} s left: not enough for a study")
    return iterations


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_study.log")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU)"
    log(f"device: {device}; torch {torch.__version__}; {os.cpu_count()} CPU cores")
    smoke(args, log)
    iterations = args.iterations or study_iterations(args, log, calibrate(args, log))
    log(f"study: {iterations} iterations per run, seeds {args.seeds}")
    results = args.out / "results"
    for seed in args.seeds:
        commands = {
            f"{method}-seed{seed}": [
                *quality_command(args, results, args.out / "work"),
                "--only",
                f"{method}-seed{seed}",
                "--seeds",
                str(seed),
                "--iterations",
                str(iterations),
            ]
            for method in METHODS
        }
        codes = side_by_side(commands, log, timeout=max(60.0, args.budget_s - log.elapsed()))
        if any(codes.values()):
            raise SystemExit(f"seed {seed} failed: {codes}")
    for path in sorted(results.rglob("*.json")):
        result = json.loads(path.read_text())
        scores = ", ".join(
            f"{role} test {100 * s['miou']:.2f}" for role, s in result["scores"]["test"].items()
        )
        log(f"{path.parent.name}/{path.name}: {scores}")
    log("done")


if __name__ == "__main__":
    main()
