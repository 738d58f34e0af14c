"""The co-training loop: both students on the same batches, one backward, two optimizers."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from codistill.artifacts import write_json_atomic, write_text_atomic
from codistill.config import ROLES, Params
from codistill.data.loading import PreparedSplit, ResumableBatchSampler
from codistill.data.transforms import Augmentation
from codistill.distill import CoDistillationObjective, StudentPair
from codistill.distill.objective import DIRECTION_SHARES
from codistill.distill.supervised import class_weights
from codistill.engine.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    previous_path,
    restore_rng,
    save_checkpoint,
)
from codistill.engine.code_digest import code_digest
from codistill.engine.distributed import (
    DistContext,
    broadcast_buffers,
    gather_objects,
    init_distributed,
)
from codistill.engine.host_memory import reuse_freed_host_memory
from codistill.engine.optim import cnn_optimizer, poly_schedule, vit_optimizer
from codistill.engine.progress import CURVE_TERMS, WindowMeans, progress_line
from codistill.engine.tracking import NullTracker, Tracker, create_tracker, flatten
from codistill.models import build_student

LAST = "last.pt"
TRAIN_METRICS = "train_metrics.json"
CURVES = "curves.csv"
CONFIG_JSON = "config.json"


class CoTrainingModel(nn.Module):
    """Both students and the objective (with its adapters) as one module."""

    def __init__(self, cnn: nn.Module, vit: nn.Module, objective: CoDistillationObjective):
        super().__init__()
        self.cnn, self.vit, self.objective = cnn, vit, objective

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts for one batch."""
        pair = StudentPair(self.cnn(images), self.vit(images), labels, self.cnn, self.vit)
        return self.objective(pair, iteration)


def build_pair_model(
    params: Params, num_classes: int, ce_weights: torch.Tensor | None = None
) -> CoTrainingModel:
    """Both students from ``params.models`` and the objective that ``params.train`` selects."""
    cnn = build_student(params.models.cnn, num_classes)
    vit = build_student(params.models.vit, num_classes)
    channels = {
        "cnn_low": cnn.low_channels,
        "vit_low": vit.low_channels,
        "cnn_dec": cnn.dec_channels,
        "vit_dec": vit.dec_channels,
    }
    objective = CoDistillationObjective(params.train, params.distill, channels, ce_weights)
    return CoTrainingModel(cnn, vit, objective)


def config_fingerprint(params: Params, manifest_sha256: str, world_size: int = 1) -> str:
    """Hash of everything that shapes the weights; a checkpoint resumes only under the same.

    The world size counts: it sets the global batch and which samples each step reads. So
    does the code: a checkpoint left by a finished run must not stand in for a run of
    changed losses or models.
    """
    shaping = {k: asdict(getattr(params, k)) for k in ("models", "train", "distill")}
    for knob in ("num_workers", "log_every", "checkpoint_every", "compile"):
        shaping["train"].pop(knob)
    shaping["manifest"] = manifest_sha256
    shaping["world_size"] = world_size
    shaping["code"] = code_digest()
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over a model's parameters and buffers, to compare ranks or runs exactly."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class CoTrainer:
    """Trains both students on a validated prepared dataset into ``out_dir``.

    ``last.pt`` in ``checkpoint_dir`` (default ``out_dir``; a persistent volume on a cluster)
    is rewritten atomically every ``train.checkpoint_every`` iterations; a new run with the
    same configuration resumes from it.
    """

    def __init__(
        self,
        params: Params,
        prepared_dir: str | Path,
        out_dir: str | Path,
        tracking: bool = False,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.params = params
        self.cfg = params.train
        self.out_dir = Path(out_dir)
        self.checkpoint_path = Path(checkpoint_dir or out_dir) / LAST
        self.context: DistContext = init_distributed()
        self.tracking = tracking and self.context.is_main
        augmentation = Augmentation(self.cfg.crop, self.cfg.scale, self.cfg.flip)
        self.data = PreparedSplit(prepared_dir, "train", augmentation)
        self.fingerprint = config_fingerprint(
            params, self.data.info["manifest_sha256"], self.context.world_size
        )
        weights = (
            class_weights(self.data.class_pixel_counts(), self.cfg.class_balance)
            if self.cfg.class_balance
            else None
        )
        torch.manual_seed(self.cfg.seed)
        self.model = build_pair_model(params, self.data.info["num_classes"], weights)
        if self.context.device.type == "cpu":
            reuse_freed_host_memory()
        self.model.to(self.context.device)
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        objective = self.model.objective
        self.optimizers = {
            "cnn": cnn_optimizer(
                self.model.cnn, objective.owned_parameters("cnn"), self.cfg.cnn_optimizer
            ),
            "vit": vit_optimizer(
                self.model.vit, objective.owned_parameters("vit"), self.cfg.vit_optimizer
            ),
        }
        schedules = {"cnn": self.cfg.cnn_optimizer, "vit": self.cfg.vit_optimizer}
        self.schedulers = {
            r: poly_schedule(
                o, self.cfg.iterations, schedules[r].poly_power, schedules[r].warmup_iters
            )
            for r, o in self.optimizers.items()
        }
        self.iteration = 0
        self.curves: list[dict[str, float]] = []
        self.run_id: str | None = None
        self._resume()
        # Dropout differs per rank, and is reproducible after a resume.
        if self.iteration == 0:
            torch.manual_seed(self.cfg.seed + 1 + self.context.rank)

    def _readable_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that reads back (``last.pt``, else the one kept before it)."""
        problems = []
        for path in (self.checkpoint_path, previous_path(self.checkpoint_path)):
            if not path.is_file():
                continue
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
                continue
            if problems and self.context.is_main:
                print(f"train: {problems[0]}; resuming from {path} instead")
            return path, state
        if problems:
            raise CheckpointError(
                f"{'; '.join(problems)}; no earlier checkpoint reads back: move it away to "
                "train from the start"
            )
        return None

    def _resume(self) -> None:
        found = self._readable_checkpoint()
        if found is None:
            return
        path, state = found
        if state.get("fingerprint") != self.fingerprint:
            if self.context.is_main:
                print(
                    f"train: {path} is from another configuration or code version "
                    f"({state.get('fingerprint', 'none')[:12]} != {self.fingerprint[:12]}); "
                    "starting afresh"
                )
            return
        self.model.load_state_dict(state["model"])
        for role in ROLES:
            self.optimizers[role].load_state_dict(state["optimizers"][role])
            self.schedulers[role].load_state_dict(state["schedulers"][role])
        self.iteration = state["iteration"]
        self.curves = state["curves"]
        self.run_id = state.get("run_id")
        restore_rng(state["rng"][min(self.context.rank, len(state["rng"]) - 1)])
        if self.context.is_main:
            print(f"train: resuming from {path} at iteration {self.iteration}")

    def _checkpoint(self) -> None:
        rng = gather_objects(capture_rng(), self.context)
        if not self.context.is_main:
            return
        save_checkpoint(
            self.checkpoint_path,
            {
                "fingerprint": self.fingerprint,
                "iteration": self.iteration,
                "model": self.model.state_dict(),
                "optimizers": {r: o.state_dict() for r, o in self.optimizers.items()},
                "schedulers": {r: s.state_dict() for r, s in self.schedulers.items()},
                "rng": rng,
                "curves": self.curves,
                "run_id": self.run_id,
            },
            keep_previous=True,
        )
        self._write_curves()

    def _write_curves(self) -> None:
        if not self.curves:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.curves[-1]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.curves)
        write_text_atomic(self.out_dir / CURVES, buffer.getvalue())

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

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.amp and self.context.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _tracker(self) -> Tracker:
        if not self.tracking:
            return NullTracker()
        tracker = create_tracker(
            True,
            run_name=f"train-{self.cfg.method}",
            resume_run_id=self.run_id,
            tags={"stage": "train", "method": self.cfg.method},
        )
        self.run_id = tracker.run_id
        config = {k: asdict(getattr(self.params, k)) for k in ("models", "train", "distill")}
        tracker.log_params(flatten(config))
        write_json_atomic(self.out_dir / CONFIG_JSON, asdict(self.params))
        tracker.log_artifact(self.out_dir / CONFIG_JSON)
        return tracker

    def run(self) -> dict[str, Any]:
        """Train to ``train.iterations`` (from the resumed point) and write the outputs."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tracker = self._tracker()
        try:
            metrics = self._loop(tracker)
        except BaseException:
            tracker.finish("FAILED")
            raise
        tracker.finish()
        return metrics

    def _step(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        device = self.context.device
        images = images.to(device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with self._autocast():
            total, parts = model(images, labels, self.iteration)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for role in ROLES:
            self.optimizers[role].step()
            self.schedulers[role].step()
        return parts

    def _loop(self, tracker: Tracker) -> dict[str, Any]:
        model: nn.Module = self.model
        if self.cfg.compile:
            self.model.cnn.compile()
            self.model.vit.compile()
        if self.context.world_size > 1:
            device_ids = [self.context.device] if self.context.device.type == "cuda" else None
            model = DistributedDataParallel(self.model, device_ids=device_ids)
        model.train()
        images_per_step = self.cfg.batch_size * self.context.world_size
        progress = tqdm(
            total=self.cfg.iterations,
            initial=self.iteration,
            desc="train",
            disable=not self.context.is_main or None,
            dynamic_ncols=True,
        )
        window_start, window = time.perf_counter(), WindowMeans()
        started, start_iteration = time.perf_counter(), self.iteration
        for images, labels in self._loader():
            window.add(self._step(model, images, labels))
            self.iteration += 1
            progress.update(1)
            if self.iteration % self.cfg.log_every == 0 or self.iteration == self.cfg.iterations:
                elapsed = time.perf_counter() - window_start
                steps = window.steps
                means = window.pop()
                row = {
                    "iteration": self.iteration,
                    **{f"loss_{k}": round(means.get(k, 0.0), 6) for k in CURVE_TERMS},
                    **{k: round(means.get(k, 0.0), 6) for k in DIRECTION_SHARES},
                    **{f"lr_{r}": o.param_groups[0]["lr"] for r, o in self.optimizers.items()},
                    "images_per_s": round(images_per_step * steps / elapsed, 3),
                }
                self.curves.append(row)
                tracker.log_metrics(
                    {k: v for k, v in row.items() if k != "iteration"}, step=self.iteration
                )
                progress.set_postfix(
                    {
                        k.removeprefix("loss_"): f"{v:.3g}"
                        for k, v in row.items()
                        if k != "iteration" and v
                    }
                )
                if self.context.is_main and not sys.stdout.isatty():  # logs and CI: one line
                    print(progress_line(row, self.cfg.iterations, elapsed / steps), flush=True)
                window_start = time.perf_counter()
            if (
                self.iteration % self.cfg.checkpoint_every == 0
                or self.iteration == self.cfg.iterations
            ):
                self._checkpoint()
        progress.close()
        return self._finish(tracker, time.perf_counter() - started, start_iteration)

    def _finish(self, tracker: Tracker, seconds: float, start_iteration: int) -> dict[str, Any]:
        broadcast_buffers(self.model, self.context)
        digests = {
            r: gather_objects(weights_digest(getattr(self.model, r)), self.context) for r in ROLES
        }
        if not self.context.is_main:
            return {}
        steps = self.iteration - start_iteration
        metrics = {
            "method": self.cfg.method,
            "terms": list(self.model.objective.names),
            "iterations": self.iteration,
            "iterations_this_run": steps,
            "world_size": self.context.world_size,
            "device": str(self.context.device),
            "seconds_this_run": round(seconds, 2),
            "images_per_s": round(
                steps * self.cfg.batch_size * self.context.world_size / seconds, 3
            )
            if steps
            else None,
            "final": self.curves[-1] if self.curves else {},
            "weights_sha256": {r: d[0] for r, d in digests.items()},
            "ranks_in_sync": all(len(set(d)) == 1 for d in digests.values()),
            "mlflow_run_id": self.run_id,
        }
        for role in ROLES:
            save_checkpoint(self.out_dir / f"{role}.pt", getattr(self.model, role).state_dict())
        # Also here: a run resumed at its last iteration writes no checkpoint.
        self._write_curves()
        write_json_atomic(self.out_dir / TRAIN_METRICS, metrics)
        tracker.log_metrics(
            {"final_loss_total": metrics["final"].get("loss_total", 0.0)}, step=self.iteration
        )
        tracker.log_artifact(self.out_dir / TRAIN_METRICS)
        return metrics
