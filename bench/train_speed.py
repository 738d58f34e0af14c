"""Training step time of each method on the same batch, as ratios against ``independent``.

A step is one forward of both students, the objective, one backward and both optimizer
steps. Methods are timed in interleaved rounds so that machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from codistill.config import load_params
from codistill.engine.optim import cnn_optimizer, vit_optimizer
from codistill.engine.trainer import build_pair_model
from environment import RESULTS, publish_table

METHODS = ("independent", "dml", "kdcl", "ours")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def make_step(params, method: str, device: torch.device, classes: int):
    """A closure that runs one full training step of ``method`` on a given batch."""
    params = replace(params, train=replace(params.train, method=method))
    torch.manual_seed(0)
    model = build_pair_model(params, classes).to(device).train()
    if params.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizers = [
        cnn_optimizer(
            model.cnn, model.objective.owned_parameters("cnn"), params.train.cnn_optimizer
        ),
        vit_optimizer(
            model.vit, model.objective.owned_parameters("vit"), params.train.vit_optimizer
        ),
    ]
    autocast = device.type == "cuda" and params.train.amp

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            total, _ = model(images, labels, iteration=10**6)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for optimizer in optimizers:
            optimizer.step()

    return step


def timed(step, images, labels, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = load_params(args.params)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *args.crop, generator=generator).to(device)
    if params.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.classes, (args.batch, *args.crop), generator=generator)
    labels[:, :8] = 255
    labels = labels.to(device)
    steps = {m: make_step(params, m, device, args.classes) for m in METHODS}
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        timed(step, images, labels, device)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(args.rounds):
        for method, step in steps.items():
            times[method].append(timed(step, images, labels, device))
    medians = {m: statistics.median(t) for m, t in times.items()}
    base = medians["independent"]
    publish_table(
        args.out,
        "Training step time per method",
        f"One step = both students forward, objective, backward, both optimizer steps; batch "
        f"{args.batch}, crop {args.crop[0]}x{args.crop[1]}, device {device}, median of "
        f"{args.rounds} interleaved rounds after one warm-up step each.",
        ("torch", "timm"),
        ["method", "median s / step", "images / s", "ratio vs independent"],
        [[m, f"{t:.3f}", f"{args.batch / t:.1f}", f"{t / base:.3f}"] for m, t in medians.items()],
    )


if __name__ == "__main__":
    main()
