"""The training loop's callbacks: each does one job at fixed points of a run.

Every rank calls every hook, since some gather across ranks, in the order of the hooks'
priorities (lowest first; equal ones in the order given); only the main rank writes files or
logs. The points are ``before_run`` (after the components are built,
before the first step), ``after_log`` (a curves row was added), ``after_step``, ``after_run``
(with the run's metrics, empty on other ranks) and ``on_failure``.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from codistill.artifacts import write_json_atomic, write_text_atomic
from codistill.config import ROLES
from codistill.engine.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    previous_path,
    restore_rng,
    save_checkpoint,
)
from codistill.engine.distributed import gather_objects
from codistill.engine.progress import progress_line
from codistill.engine.tracking import MlflowTracker, flatten

if TYPE_CHECKING:
    from codistill.engine.trainer import CoTrainer

LAST = "last.pt"
TRAIN_METRICS = "train_metrics.json"
CURVES = "curves.csv"
CONFIG_JSON = "config.json"


class Priority(IntEnum):
    """When a hook runs at each point of the loop: the lowest first."""

    HIGHEST = 0
    HIGH = 30
    NORMAL = 50
    LOW = 70
    LOWEST = 100


class Hook:
    """A callback of the training loop; each point does nothing unless overridden."""

    priority = Priority.NORMAL

    def before_run(self, trainer: CoTrainer) -> None:
        """Before the first step of this run (a resumed run starts past 0)."""

    def after_log(self, trainer: CoTrainer, row: dict[str, float]) -> None:
        """After ``row`` was appended to ``trainer.curves``."""

    def after_step(self, trainer: CoTrainer) -> None:
        """After each step, with ``trainer.iteration`` counting it."""

    def after_run(self, trainer: CoTrainer, metrics: dict[str, Any]) -> None:
        """After the last step."""

    def on_failure(self, trainer: CoTrainer) -> None:
        """When the run stops with an exception (it is raised again afterwards)."""


def in_priority_order(hooks: Iterable[Hook]) -> list[Hook]:
    """``hooks`` by priority, lowest first; equal priorities keep their order."""
    return sorted(hooks, key=lambda hook: hook.priority)


class CheckpointHook(Hook):
    """Resumes from ``last.pt`` (or the one kept before it), and rewrites it periodically.

    A checkpoint resumes only under the trainer's fingerprint or one of ``also_resume``. Its
    resume comes before the hooks that read what it restores (the MLflow run, the curves).
    """

    priority = Priority.HIGH

    def __init__(self, checkpoint_dir: Path, also_resume: Collection[str] = ()) -> None:
        self.path = Path(checkpoint_dir) / LAST
        self.also_resume = frozenset(also_resume)

    def before_run(self, trainer: CoTrainer) -> None:
        """Restore the newest readable checkpoint made under the same fingerprint."""
        found = self._readable(trainer.context.is_main)
        if found is None:
            return
        path, state = found
        if state.get("fingerprint") not in {trainer.fingerprint, *self.also_resume}:
            if trainer.context.is_main:
                print(
                    f"train: {path} is from another configuration or code version "
                    f"({state.get('fingerprint', 'none')[:12]} != {trainer.fingerprint[:12]}); "
                    "starting afresh"
                )
            return
        trainer.load_state_dict(state)
        rng = state["rng"]
        restore_rng(rng[min(trainer.context.rank, len(rng) - 1)])
        if trainer.context.is_main:
            print(f"train: resuming from {path} at iteration {trainer.iteration}")

    def _readable(self, is_main: bool) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that reads back (``last.pt``, else the one kept before it)."""
        problems = []
        for path in (self.path, previous_path(self.path)):
            if not path.is_file():
                continue
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if problems and is_main:
                print(f"train: {problems[0]}; resuming from {path} instead")
            return path, state
        if problems:
            raise CheckpointError(
                f"{'; '.join(problems)}; no earlier checkpoint reads back: move it away to "
                "train from the start"
            )
        return None

    def after_step(self, trainer: CoTrainer) -> None:
        """Write the checkpoint when one is due, keeping the one it replaces."""
        if not trainer.checkpoint_due():
            return
        rng = gather_objects(capture_rng(), trainer.context)
        if trainer.context.is_main:
            save_checkpoint(self.path, {**trainer.state_dict(), "rng": rng}, keep_previous=True)


class CurvesHook(Hook):
    """Keeps ``curves.csv`` (one row per log window) beside each checkpoint and at the end."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / CURVES

    def after_step(self, trainer: CoTrainer) -> None:
        """Rewrite the file when a checkpoint is due."""
        if trainer.checkpoint_due():
            self._write(trainer)

    def after_run(self, trainer: CoTrainer, metrics: dict[str, Any]) -> None:
        """Rewrite it once more (a run resumed at its end wrote no checkpoint)."""
        self._write(trainer)

    def _write(self, trainer: CoTrainer) -> None:
        if not trainer.context.is_main or not trainer.curves:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(trainer.curves[-1]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(trainer.curves)
        write_text_atomic(self.path, buffer.getvalue())


class ProgressHook(Hook):
    """A progress bar on a terminal; one line per log row elsewhere (logs, CI, ``dvc repro``)."""

    def before_run(self, trainer: CoTrainer) -> None:
        """Say which numeric mode the run trains in, and open the bar at the resumed iteration."""
        if trainer.context.is_main:
            print(f"train: {trainer.precision.mode} ({trainer.precision.reason})", flush=True)
        self.bar = tqdm(
            total=trainer.cfg.iterations,
            initial=trainer.iteration,
            desc="train",
            disable=not trainer.context.is_main or None,
            dynamic_ncols=True,
        )
        self.since = (time.perf_counter(), trainer.iteration)

    def after_step(self, trainer: CoTrainer) -> None:
        """Advance the bar."""
        self.bar.update(1)

    def after_log(self, trainer: CoTrainer, row: dict[str, float]) -> None:
        """Show the row's nonzero values, and print it off a terminal."""
        self.bar.set_postfix(
            {k.removeprefix("loss_"): f"{v:.3g}" for k, v in row.items() if k != "iteration" and v}
        )
        started, first = self.since
        now = time.perf_counter()
        seconds_per_step = (now - started) / max(trainer.iteration - first, 1)
        self.since = (now, trainer.iteration)
        if trainer.context.is_main and not sys.stdout.isatty():
            print(progress_line(row, trainer.cfg.iterations, seconds_per_step), flush=True)

    def after_run(self, trainer: CoTrainer, metrics: dict[str, Any]) -> None:
        """Close the bar."""
        self.bar.close()

    def on_failure(self, trainer: CoTrainer) -> None:
        """Close the bar."""
        self.bar.close()


class TrackingHook(Hook):
    """Logs the run to MLflow: parameters, each curves row, the final loss and metrics file.

    A resumed training continues the MLflow run its checkpoint names, so it starts after the
    checkpoint's resume, and it logs the files the outputs hook wrote, so it ends after that.
    """

    priority = Priority.LOWEST

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.tracker: MlflowTracker | None = None

    def before_run(self, trainer: CoTrainer) -> None:
        """Start (or continue) the run and record the configuration."""
        if not trainer.context.is_main:
            return
        method = trainer.cfg.method
        self.tracker = MlflowTracker(
            f"train-{method}",
            resume_run_id=trainer.run_id,
            tags={"stage": "train", "method": method},
        )
        trainer.run_id = self.tracker.run_id
        params = trainer.params
        config = {k: asdict(getattr(params, k)) for k in ("models", "train", "distill")}
        config["train"]["precision"] = trainer.precision.mode
        self.tracker.log_params(flatten(config))
        write_json_atomic(self.out_dir / CONFIG_JSON, asdict(params))
        self.tracker.log_artifact(self.out_dir / CONFIG_JSON)

    def after_log(self, trainer: CoTrainer, row: dict[str, float]) -> None:
        """Log the row's values at its iteration."""
        if self.tracker is not None:
            values = {k: v for k, v in row.items() if k != "iteration"}
            self.tracker.log_metrics(values, step=trainer.iteration)

    def after_run(self, trainer: CoTrainer, metrics: dict[str, Any]) -> None:
        """Log the final loss and the metrics file, and end the run."""
        if self.tracker is None:
            return
        final = {"final_loss_total": metrics["final"].get("loss_total", 0.0)}
        self.tracker.log_metrics(final, step=trainer.iteration)
        self.tracker.log_artifact(self.out_dir / TRAIN_METRICS)
        self.tracker.finish()

    def on_failure(self, trainer: CoTrainer) -> None:
        """End the run as failed."""
        if self.tracker is not None:
            self.tracker.finish("FAILED")


class OutputsHook(Hook):
    """Writes the trained students (``cnn.pt``, ``vit.pt``) and ``train_metrics.json``."""

    priority = Priority.LOW

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def after_run(self, trainer: CoTrainer, metrics: dict[str, Any]) -> None:
        """Write both students' weights and the run's metrics."""
        if not trainer.context.is_main:
            return
        for role in ROLES:
            student: torch.nn.Module = getattr(trainer.model, role)
            save_checkpoint(self.out_dir / f"{role}.pt", student.state_dict())
        write_json_atomic(self.out_dir / TRAIN_METRICS, metrics)
