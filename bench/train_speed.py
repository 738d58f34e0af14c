"""Training step time per method in float32 and in bf16, distillation share, memory, hot spots.

A step is the trainer's own step (``codistill.engine.trainer.train_step``): one forward of
both students, the objective, one backward and both optimizer steps, on the same synthetic
batch for every method, at the recipe's geometry (``train.batch_size`` and ``train.crop`` of
``--params``). Each method runs in float32 and, on a device with bf16 instructions, under bf16
autocast; all of them are timed in interleaved rounds so that machine noise hits them alike,
once per thread count, and each ratio compares two medians of the same rounds. Each of
``ours``' terms is also timed alone (the ablation switches), which shows roughly what each
costs. Peak memory is measured in a fresh process per method and mode.
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
from codistill.engine.precision import BF16, FLOAT32, Precision, resolve_precision
from codistill.engine.trainer import train_step
from codistill.study.regimes import ABLATIONS, MAIN, Variant
from environment import bench_parser, markdown_table, num_classes, publish_table

TERMS_ALONE = tuple(v for v in ABLATIONS if sum(v.switches.values()) == 1)
VARIANTS = (*MAIN, *TERMS_ALONE)
REFERENCE = "independent"
PROFILED = "ours"
HOT_SPOTS = 14

Step = Callable[[torch.Tensor, torch.Tensor], None]
Key = tuple[str, str]  # (variant label, numeric mode)


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, help="default: train.batch_size of --params")
    parser.add_argument("--crop", type=int, nargs=2, help="default: train.crop of --params")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[v.slug for v in VARIANTS],
        help="the rows to time (default: all); independent, the reference, is always timed",
    )
    return parser.parse_args()


def chosen_variants(slugs: list[str] | None) -> tuple[Variant, ...]:
    """The variants named by ``slugs`` (all when None), the reference first."""
    wanted = {REFERENCE, *(slugs or [v.slug for v in VARIANTS])}
    return tuple(v for v in VARIANTS if v.slug in wanted)


def make_step(
    params: Params, variant: Variant, device: torch.device, classes: int, precision: Precision
) -> Step:
    """A closure that runs one training step of ``variant`` in ``precision`` on a given batch."""
    switches = {term: variant.switches.get(term) for term in SWITCHABLE_TERMS}
    params = replace(params, train=replace(params.train, method=variant.method, **switches))
    torch.manual_seed(0)
    model = build_pair_model(params, classes).to(device).train()
    if params.train.channels_last:
        model.to(memory_format=torch.channels_last)
    owned = model.objective.owned_parameters
    optimizers = {
        "cnn": cnn_optimizer(model.cnn, owned("cnn"), params.train.cnn_optimizer),
        "vit": vit_optimizer(model.vit, owned("vit"), params.train.vit_optimizer),
    }

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(model, optimizers, precision, images, labels, iteration=10**6)

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
    """The device, the parameters, the batch every method trains on, and the numeric modes."""

    device: torch.device
    params: Params
    classes: int
    images: torch.Tensor
    labels: torch.Tensor
    precisions: dict[str, Precision]

    def step(self, variant: Variant, mode: str) -> Step:
        """A fresh model and optimizers for ``variant`` in ``mode``, as a step closure."""
        return make_step(self.params, variant, self.device, self.classes, self.precisions[mode])

    def time(self, step: Step) -> float:
        """Seconds of one step on the batch, device work included."""
        synchronize(self.device)
        start = time.perf_counter()
        step(self.images, self.labels)
        synchronize(self.device)
        return time.perf_counter() - start


def set_up(args: argparse.Namespace) -> Bench:
    """Pick the device and its numeric modes, read the parameters and draw the batch.

    bf16 is measured only where ``train.amp`` would train in it (the device has bf16).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        reuse_freed_host_memory()  # as training does
    params = load_params(args.params)
    classes = num_classes(params)
    batch = args.batch or params.train.batch_size
    crop = tuple(args.crop or params.train.crop)
    images, labels = synthetic_batch(params, batch, crop, classes, device)
    precisions = {FLOAT32: resolve_precision(False, device)}
    if (bf16 := resolve_precision(True, device)).mode == BF16:
        precisions[BF16] = bf16
    return Bench(device, params, classes, images, labels, precisions)


def peak_memory_mib(args: argparse.Namespace, key: Key) -> float:
    """Peak memory of two steps of one variant in one mode, alone in this process.

    CUDA: the allocator's peak. CPU: the process's peak resident size, libraries and
    both students included, so differences between methods are what the methods add.
    """
    bench = set_up(args)
    label, mode = key
    step = bench.step(next(v for v in VARIANTS if v.label == label), mode)
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        bench.time(step)
    if bench.device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_resident_mib()


def peak_resident_mib() -> float:
    """The peak resident size of the current process's own memory map, in MiB.

    Linux's VmHWM starts, in a forked process, at what it inherited; ``ru_maxrss`` would
    instead keep the parent's size from before the fork.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def peak_memories(args: argparse.Namespace, keys: list[Key]) -> dict[Key, float]:
    """Each variant's peak memory in each mode, measured in a process of its own.

    Each process forks from a server that has imported this script and its libraries and
    done nothing else (no student built, no step run, no thread started), so it starts
    where a fresh process would after its imports, without paying for them again.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__"])
    with context.Pool(1, maxtasksperchild=1) as pool:
        return {key: pool.apply(peak_memory_mib, (args, key)) for key in keys}


def hot_spots(bench: Bench, step: Step) -> tuple[dict[str, tuple[float, int]], float]:
    """Operator -> (self ms, calls) in one profiled step, and all operators' ms."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        bench.time(step)
    attribute = "self_device_time_total" if bench.device.type == "cuda" else "self_cpu_time_total"
    # Operators only: on CUDA each kernel's time is counted once, at the operator that ran it.
    operators = [e for e in profile.key_averages() if e.device_type == DeviceType.CPU]
    spots = {e.key: (getattr(e, attribute) / 1e3, e.count) for e in operators}
    spots = {k: v for k, v in spots.items() if v[0] > 0}
    return spots, sum(ms for ms, _ in spots.values())


def interleaved_medians(bench: Bench, steps: dict[Key, Step], rounds: int) -> dict[Key, float]:
    """Median seconds per step of each step closure, over interleaved rounds after a warm-up."""
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        bench.time(step)
    times: dict[Key, list[float]] = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            times[key].append(bench.time(step))
    return {key: statistics.median(t) for key, t in times.items()}


def profile_lines(bench: Bench, steps: dict[Key, Step], threads: int) -> list[str]:
    """A table of the profiled method's top operators, in each mode side by side."""
    labels = list(dict.fromkeys(label for label, _ in steps))
    profiled = PROFILED if PROFILED in labels else labels[-1]
    profiles = {mode: hot_spots(bench, steps[(profiled, mode)]) for mode in bench.precisions}
    last = list(bench.precisions)[-1]
    spots, _ = profiles[last]
    top = sorted(spots, key=lambda op: spots[op][0], reverse=True)[:HOT_SPOTS]
    header = ["operator", *(f"{mode} self ms / step" for mode in bench.precisions), "calls"]
    rows = [
        [op, *(f"{profiles[m][0].get(op, (0.0, 0))[0]:.1f}" for m in bench.precisions), str(n)]
        for op in top
        if (n := spots[op][1])
    ]
    totals = ", ".join(f"{mode} {total:.0f} ms" for mode, (_, total) in profiles.items())
    return [
        "",
        f"Hot spots of one profiled `{profiled}` step with {threads} thread(s) (torch.profiler, "
        f"self time of each operator, the top {HOT_SPOTS} in {last}; all operators: {totals}, "
        "slower than an unprofiled step):",
        "",
        *markdown_table(header, rows),
    ]


def speed_rows(
    bench: Bench, medians: dict[Key, float], memory: dict[Key, float], threads: int
) -> list[list[str]]:
    """Per method at ``threads``: s / step, images / s, bf16 speed-up, ratios and memory."""
    batch = bench.images.shape[0]
    modes = list(bench.precisions)
    rows = []
    for label in dict.fromkeys(label for label, _ in medians):
        row = [label, str(threads)]
        for mode in modes:
            seconds = medians[(label, mode)]
            row += [f"{seconds:.3f}", f"{batch / seconds:.2f}"]
        if BF16 in modes:
            row.append(f"{medians[(label, FLOAT32)] / medians[(label, BF16)]:.2f}x")
        row += [f"{medians[(label, m)] / medians[(REFERENCE, m)]:.3f}" for m in modes]
        row += [f"{memory[(label, m)]:.0f}" for m in modes]
        rows.append(row)
    return rows


def main() -> None:
    args = parse_args()
    bench = set_up(args)
    modes = list(bench.precisions)
    variants = {v.label: v for v in chosen_variants(args.methods)}
    keys = [(label, mode) for label in variants for mode in modes]
    memory = peak_memories(args, keys)
    rows, profiles = [], []
    for threads in args.threads:
        torch.set_num_threads(threads)
        steps = {(label, mode): bench.step(variants[label], mode) for label, mode in keys}
        medians = interleaved_medians(bench, steps, args.rounds)
        profiles += profile_lines(bench, steps, threads)
        del steps
        rows += speed_rows(bench, medians, memory, threads)
    header = ["method", "threads"]
    for mode in modes:
        header += [f"{mode} s / step", f"{mode} images / s"]
    if BF16 in modes:
        header.append("bf16 speed-up")
    header += [f"{mode} vs independent" for mode in modes]
    header += [f"{mode} peak MiB" for mode in modes]
    reason = resolve_precision(True, bench.device).reason
    absent = "" if BF16 in modes else f" This device has no bf16 ({reason}): float32 only."
    batch, crop = bench.images.shape[0], tuple(bench.images.shape[-2:])
    publish_table(
        args.out,
        "Training step time per method",
        "One step = the trainer's step: both students forward, objective, backward, both "
        f"optimizer steps; batch {batch}, crop {crop[0]}x{crop[1]} (the recipe's), device "
        f"{bench.device}, median of {args.rounds} interleaved rounds after one warm-up step "
        "each, per thread count. bf16 = the forward under bf16 autocast (`train.amp` on a "
        "device with bf16); bf16 speed-up = float32 s / bf16 s of the same method in the same "
        "rounds. vs independent = the method's step over `independent`'s (the same students "
        "without any cross term) in the same mode. The 'only' rows switch one of `ours`' "
        "terms on alone (the terms share the per-pixel log-probabilities, so their costs do "
        "not add up exactly). The distillation weights set no work, so the shipped and the "
        "tuned `ours` cost the same. Peak memory: "
        + ("the CUDA allocator's peak" if bench.device.type == "cuda" else "peak resident size")
        + " of a process of its own (forked after the imports, before any student is built) "
        "running two steps of that method alone." + absent,
        ("torch", "timm"),
        header,
        rows,
        extra=profiles,
    )


if __name__ == "__main__":
    main()
