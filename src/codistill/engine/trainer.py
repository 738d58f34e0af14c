"""The co-training loop: both students on the same batches, one backward, two optimizers.

``build_setup`` makes what a run trains with (process group, data, students, optimizers);
``CoTrainer`` steps through the batches and calls its hooks (``codistill.engine.hooks``)
for everything else: resuming and checkpoints, progress, curves, MLflow and the outputs.
``train_students`` puts the two together with the standard hooks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from codistill.config import ROLES, RUN_ONLY_KEYS, Params
from codistill.data.loading import PreparedSplit, ResumableBatchSampler
from codistill.data.transforms import Augmentation
from codistill.distill.co_training import CoTrainingModel, build_pair_model
from codistill.distill.objective import DIRECTION_SHARES
from codistill.distill.supervised import class_weights
from codistill.engine.code_digest import code_digest
from codistill.engine.distributed import (
    DistContext,
    broadcast_buffers,
    gather_objects,
    init_distributed,
)
from codistill.engine.hooks import (
    CheckpointHook,
    CurvesHook,
    Hook,
    OutputsHook,
    ProgressHook,
    TrackingHook,
    in_priority_order,
)
from codistill.engine.host_memory import reuse_freed_host_memory
from codistill.engine.optim import cnn_optimizer, poly_schedule, vit_optimizer
from codistill.engine.precision import Precision, resolve_precision
from codistill.engine.progress import CURVE_TERMS, WindowMeans


def config_fingerprint(
    params: Params,
    manifest_sha256: str,
    precision: str,
    world_size: int = 1,
    code: str | None = None,
) -> str:
    """Hash of everything that shapes the weights; a checkpoint resumes only under the same.

    The numeric mode counts (``precision``, as resolved from ``train.amp`` on this device),
    not the flag: a float32 checkpoint must not go on in bf16 on another machine. The world
    size counts: it sets the global batch and which samples each step reads. So does the
    code (``code``, default the present code's digest): a checkpoint left by a finished run
    must not stand in for a run of changed losses or models.
    """
    shaping = {k: asdict(getattr(params, k)) for k in ("models", "train", "distill")}
    # A run also resumes across a new checkpoint cadence or compilation setting.
    for key in (*RUN_ONLY_KEYS, "train.checkpoint_every", "train.compile", "train.amp"):
        shaping["train"].pop(key.removeprefix("train."))
    shaping["precision"] = precision
    shaping["manifest"] = manifest_sha256
    shaping["world_size"] = world_size
    shaping["code"] = code or code_digest()
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over a model's parameters and buffers, to compare ranks or runs exactly."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TrainingSetup:
    """What a run trains with, built from ``params`` and the prepared data."""

    context: DistContext
    data: PreparedSplit
    model: CoTrainingModel
    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    precision: Precision
    fingerprint: str


def build_setup(params: Params, prepared_dir: str | Path) -> TrainingSetup:
    """Join the process group, open the training split and build the students and optimizers.

    ``train.seed`` seeds the students' initial weights.
    """
    cfg = params.train
    context = init_distributed()
    data = PreparedSplit(prepared_dir, "train", Augmentation(cfg.crop, cfg.scale, cfg.flip))
    weights = (
        class_weights(data.class_pixel_counts(), cfg.class_balance) if cfg.class_balance else None
    )
    torch.manual_seed(cfg.seed)
    model = build_pair_model(params, data.info["num_classes"], weights)
    if context.device.type == "cpu":
        reuse_freed_host_memory()
    model.to(context.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    owned = model.objective.owned_parameters
    optimizers = {
        "cnn": cnn_optimizer(model.cnn, owned("cnn"), cfg.cnn_optimizer),
        "vit": vit_optimizer(model.vit, owned("vit"), cfg.vit_optimizer),
    }
    schedules = {"cnn": cfg.cnn_optimizer, "vit": cfg.vit_optimizer}
    schedulers = {
        role: poly_schedule(
            optimizer, cfg.iterations, schedules[role].poly_power, schedules[role].warmup_iters
        )
        for role, optimizer in optimizers.items()
    }
    precision = resolve_precision(cfg.amp, context.device)
    fingerprint = config_fingerprint(
        params, data.info["manifest_sha256"], precision.mode, context.world_size
    )
    return TrainingSetup(context, data, model, optimizers, schedulers, precision, fingerprint)


def train_step(
    model: nn.Module,
    optimizers: dict[str, Optimizer],
    precision: Precision,
    images: torch.Tensor,
    labels: torch.Tensor,
    iteration: int,
) -> dict[str, torch.Tensor]:
    """One co-training step: forward (under ``precision``), one backward, both optimizers.

    Returns the objective's detached parts. The schedulers are the caller's.
    """
    with precision.context(images.device):
        total, parts = model(images, labels, iteration)
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    total.backward()
    for role in ROLES:
        optimizers[role].step()
    return parts


class CoTrainer:
    """Steps both students through ``train.iterations`` batches, calling ``hooks`` around."""

    def __init__(self, params: Params, setup: TrainingSetup, hooks: Sequence[Hook]) -> None:
        self.params = params
        self.cfg = params.train
        self.context = setup.context
        self.data = setup.data
        self.model = setup.model
        self.optimizers = setup.optimizers
        self.schedulers = setup.schedulers
        self.precision = setup.precision
        self.fingerprint = setup.fingerprint
        self.hooks = in_priority_order(hooks)
        self.iteration = 0
        self.curves: list[dict[str, float]] = []
        self.run_id: str | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds besides the RNG states."""
        return {
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
            "schedulers": {r: s.state_dict() for r, s in self.schedulers.items()},
            "curves": self.curves,
            "run_id": self.run_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state_dict``."""
        self.model.load_state_dict(state["model"])
        for role in ROLES:
            self.optimizers[role].load_state_dict(state["optimizers"][role])
            self.schedulers[role].load_state_dict(state["schedulers"][role])
        self.iteration = state["iteration"]
        self.curves = state["curves"]
        self.run_id = state.get("run_id")

    def checkpoint_due(self) -> bool:
        """Whether the step just taken ends a checkpoint interval or the run."""
        every = self.cfg.checkpoint_every
        return self.iteration % every == 0 or self.iteration == self.cfg.iterations

    def _log_due(self) -> bool:
        return self.iteration % self.cfg.log_every == 0 or self.iteration == self.cfg.iterations

    def _call(self, point: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def run(self) -> dict[str, Any]:
        """Train to ``train.iterations`` (from the resumed point); the run's metrics."""
        self._call("before_run")
        # Dropout differs per rank, and is reproducible after a resume.
        if self.iteration == 0:
            torch.manual_seed(self.cfg.seed + 1 + self.context.rank)
        try:
            started, start_iteration = time.perf_counter(), self.iteration
            self._loop()
            metrics = self._metrics(time.perf_counter() - started, start_iteration)
            self._call("after_run", metrics)
        except BaseException:
            self._call("on_failure")
            raise
        return metrics

    def _loop(self) -> None:
        model: nn.Module = self.model
        if self.cfg.compile:
            self.model.cnn.compile()
            self.model.vit.compile()
        if self.context.world_size > 1:
            device_ids = [self.context.device] if self.context.device.type == "cuda" else None
            model = DistributedDataParallel(self.model, device_ids=device_ids)
        model.train()
        window, window_start = WindowMeans(), time.perf_counter()
        for images, labels in self._loader():
            window.add(self._step(model, images, labels))
            self.iteration += 1
            if self._log_due():
                elapsed, steps = time.perf_counter() - window_start, window.steps
                row = self._row(window.pop(), steps, elapsed)
                self.curves.append(row)
                self._call("after_log", row)
                window_start = time.perf_counter()
            self._call("after_step")

    def _row(self, means: dict[str, float], steps: int, elapsed: float) -> dict[str, float]:
        images = self.cfg.batch_size * self.context.world_size * steps
        return {
            "iteration": self.iteration,
            **{f"loss_{k}": round(means.get(k, 0.0), 6) for k in CURVE_TERMS},
            **{k: round(means.get(k, 0.0), 6) for k in DIRECTION_SHARES},
            **{f"lr_{r}": o.param_groups[0]["lr"] for r, o in self.optimizers.items()},
            "images_per_s": round(images / elapsed, 3),
        }

    def _loader(self) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.data),
            self.cfg.batch_size,
            self.cfg.seed,
            self.iteration,
            self.cfg.iterations,
            self.context.rank,
            self.context.world_size,
        )
        # Its own generator: the loader must not draw from the global RNG that dropout uses,
        # or a resumed run would see a shifted dropout stream.
        return DataLoader(
            self.data,
            batch_sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.context.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _step(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        device = self.context.device
        images = images.to(device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        parts = train_step(model, self.optimizers, self.precision, images, labels, self.iteration)
        for scheduler in self.schedulers.values():
            scheduler.step()
        return parts

    def _metrics(self, seconds: float, start_iteration: int) -> dict[str, Any]:
        """The run's summary (every rank takes part; other ranks get an empty one)."""
        broadcast_buffers(self.model, self.context)
        digests = {
            r: gather_objects(weights_digest(getattr(self.model, r)), self.context) for r in ROLES
        }
        if not self.context.is_main:
            return {}
        steps = self.iteration - start_iteration
        images = steps * self.cfg.batch_size * self.context.world_size
        return {
            "method": self.cfg.method,
            "terms": list(self.model.objective.names),
            "iterations": self.iteration,
            "iterations_this_run": steps,
            "world_size": self.context.world_size,
            "device": str(self.context.device),
            "precision": self.precision.mode,
            "precision_reason": self.precision.reason,
            "seconds_this_run": round(seconds, 2),
            "images_per_s": round(images / seconds, 3) if steps else None,
            "final": self.curves[-1] if self.curves else {},
            "weights_sha256": {r: d[0] for r, d in digests.items()},
            "ranks_in_sync": all(len(set(d)) == 1 for d in digests.values()),
            "mlflow_run_id": self.run_id,
        }


def standard_hooks(
    out_dir: Path,
    checkpoint_dir: Path | None = None,
    tracking: bool = False,
    also_resume: Collection[str] = (),
) -> list[Hook]:
    """The hooks every training runs with (each runs at its priority).

    Checkpoints in ``checkpoint_dir`` (default ``out_dir``; those of the ``also_resume``
    fingerprints are resumed too), curves, progress, the students and metrics in ``out_dir``,
    and MLflow when ``tracking``.
    """
    hooks: list[Hook] = [
        CheckpointHook(checkpoint_dir or out_dir, also_resume),
        CurvesHook(out_dir),
        ProgressHook(),
        OutputsHook(out_dir),
    ]
    if tracking:
        hooks.append(TrackingHook(out_dir))
    return hooks


def train_students(
    params: Params,
    prepared_dir: str | Path,
    out_dir: str | Path,
    *,
    tracking: bool = False,
    checkpoint_dir: str | Path | None = None,
    hooks: Sequence[Hook] = (),
    equivalent_codes: Collection[str] = (),
) -> dict[str, Any]:
    """Co-train both students into ``out_dir``, resuming from ``checkpoint_dir``'s ``last.pt``.

    ``hooks`` join the standard ones, each at its priority. A checkpoint made by code of one
    of the ``equivalent_codes`` digests (shown to train the same weights) is resumed as well.
    Returns the run's metrics (empty on a non-main rank).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else None
    setup = build_setup(params, prepared_dir)
    manifest, world_size = setup.data.info["manifest_sha256"], setup.context.world_size
    mode = setup.precision.mode
    also = {config_fingerprint(params, manifest, mode, world_size, c) for c in equivalent_codes}
    tracked = tracking and setup.context.is_main
    every = [*hooks, *standard_hooks(out_dir, checkpoints, tracked, also)]
    return CoTrainer(params, setup, every).run()
