"""Training step time, distillation share, peak memory and hot spots of each method.

A step is one forward of both students, the objective, one backward and both optimizer
steps, on the same synthetic batch for every method. Methods are timed in interleaved
rounds so that machine noise hits them alike, and each ratio compares two medians of the
same run. Each of ``ours``' terms is also timed alone (the ablation switches), which shows
roughly what each costs (the terms share some work, so their costs do not add up exactly).
Peak memory is measured in a fresh process per method.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.autograd import DeviceType

from codistill.config import SWITCHABLE_TERMS, Params, load_params
from codistill.distill.co_training import build_pair_model
from codistill.engine.host_memory import reuse_freed_host_memory
from codistill.engine.optim import cnn_optimizer, vit_optimizer
from environment import bench_parser, markdown_table, num_classes, publish_table
from quality import ABLATIONS, MAIN, Variant

TERMS_ALONE = tuple(v for v in ABLATIONS if sum(v.switches.values()) == 1)
VARIANTS = (*MAIN, *TERMS_ALONE)
PROFILED = "ours"
HOT_SPOTS = 12

Step = Callable[[torch.Tensor, torch.Tensor], None]


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--rounds", type=int, default=10)
    return parser.parse_args()


def make_step(params: Params, variant: Variant, device: torch.device, classes: int) -> Step:
    """A closure that runs one full training step of ``variant`` on a given batch."""
    switches = {term: variant.switches.get(term) for term in SWITCHABLE_TERMS}
    params = replace(params, train=replace(params.train, method=variant.method, **switches))
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


def synthetic_batch(
    params: Params, batch: int, crop: tuple[int, int], classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch of images and labels (a band of ignored pixels on top)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *crop, generator=generator).to(device)
    if params.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch, *crop), generator=generator)
    labels[:, :8] = 255
    return images, labels.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Bench:
    """The device, the parameters, and the batch every method trains on."""

    device: torch.device
    params: Params
    classes: int
    images: torch.Tensor
    labels: torch.Tensor

    def step(self, variant: Variant) -> Step:
        """A fresh model and optimizers for ``variant``, as a step closure."""
        return make_step(self.params, variant, self.device, self.classes)

    def time(self, step: Step) -> float:
        """Seconds of one step on the batch, device work included."""
        synchronize(self.device)
        start = time.perf_counter()
        step(self.images, self.labels)
        synchronize(self.device)
        return time.perf_counter() - start


def set_up(args: argparse.Namespace) -> Bench:
    """Pick the device, read the parameters and draw the batch."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        reuse_freed_host_memory()  # as training does
    params = load_params(args.params)
    classes = num_classes(params)
    images, labels = synthetic_batch(params, args.batch, tuple(args.crop), classes, device)
    return Bench(device, params, classes, images, labels)


def peak_memory_mib(args: argparse.Namespace, label: str) -> float:
    """Peak memory of two steps of one variant, alone in this process.

    CUDA: the allocator's peak. CPU: the process's peak resident size, libraries and
    both students included, so differences between methods are what the methods add.
    """
    bench = set_up(args)
    step = bench.step(next(v for v in VARIANTS if v.label == label))
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        bench.time(step)
    if bench.device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_resident_mib()


def peak_resident_mib() -> float:
    """The peak resident size of the current program (since its exec), in MiB.

    Linux's VmHWM belongs to the process's own memory map; ``ru_maxrss`` would instead keep
    the parent's size from before the spawn.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def peak_memories(args: argparse.Namespace) -> dict[str, float]:
    """Each variant's peak memory, measured in its own fresh process."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return {v.label: pool.apply(peak_memory_mib, (args, v.label)) for v in VARIANTS}


def hot_spots(bench: Bench, step: Step) -> tuple[list[tuple[str, float, int]], float]:
    """(operator, self ms, calls) of the top operators in one profiled step; all ops' ms."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        bench.time(step)
    attribute = "self_device_time_total" if bench.device.type == "cuda" else "self_cpu_time_total"
    # Operators only: on CUDA each kernel's time is counted once, at the operator that ran it.
    operators = [e for e in profile.key_averages() if e.device_type == DeviceType.CPU]
    events = [e for e in operators if getattr(e, attribute) > 0]
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    total = sum(getattr(e, attribute) for e in events) / 1e3
    return [(e.key, getattr(e, attribute) / 1e3, e.count) for e in events[:HOT_SPOTS]], total


def main() -> None:
    args = parse_args()
    bench = set_up(args)
    steps = {v.label: bench.step(v) for v in VARIANTS}
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        bench.time(step)
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            times[label].append(bench.time(step))
    spots, profiled_ms = hot_spots(bench, steps[PROFILED])
    del steps
    memory = peak_memories(args)
    medians = {label: statistics.median(t) for label, t in times.items()}
    base = medians["independent"]
    rows = [
        [
            label,
            f"{t:.3f}",
            f"{args.batch / t:.2f}",
            f"{t / base:.3f}",
            f"{t - base:.3f}",
            f"{100 * (1 - base / t):.1f}%",
            f"{memory[label]:.0f}",
        ]
        for label, t in medians.items()
    ]
    profile_lines = [
        "",
        f"Hot spots of one profiled `{PROFILED}` step (torch.profiler, self time of each "
        f"operator; all operators {profiled_ms:.0f} ms, slower than an unprofiled step):",
        "",
        *markdown_table(
            ["operator", "self ms / step", "share", "calls"],
            [[k, f"{ms:.1f}", f"{100 * ms / profiled_ms:.1f}%", str(n)] for k, ms, n in spots],
        ),
    ]
    publish_table(
        args.out,
        "Training step time per method",
        f"One step = both students forward, objective, backward, both optimizer steps; batch "
        f"{args.batch}, crop {args.crop[0]}x{args.crop[1]}, device {bench.device}, median of "
        f"{args.rounds} interleaved rounds after one warm-up step each. Distillation share = "
        "the part of the method's step above `independent` (the same students without any "
        "cross term): forward, backward and optimizer work of the terms and their adapters. "
        "The 'only' rows switch one of `ours`' terms on alone; their extra seconds show "
        "roughly what each term costs (the terms share the per-pixel log-probabilities, so "
        "the costs do not add up exactly). Peak memory: "
        + ("the CUDA allocator's peak" if bench.device.type == "cuda" else "peak resident size")
        + " of a fresh process running two steps of that method alone.",
        ("torch", "timm"),
        [
            "method",
            "median s / step",
            "images / s",
            "ratio vs independent",
            "extra s / step",
            "distillation share",
            "peak memory MiB",
        ],
        rows,
        extra=profile_lines,
    )


if __name__ == "__main__":
    main()
