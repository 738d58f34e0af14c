"""Inference speed of each student: PyTorch eager against ONNX Runtime FP32, INT8 and FP16.

All engines compute the same outputs (logits and uint8 labels at the input's size) on the
same real test images, in interleaved rounds so that machine noise hits them alike. With
``--triton`` the local Triton endpoint is loaded as well, and its throughput is set against
direct ONNX Runtime on the same graph (the serving overhead).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from codistill.config import ROLES, load_params
from codistill.data.samples import evenly_spaced_images
from codistill.evaluation.students import load_students
from codistill.export.folding import inference_form
from codistill.export.graph_io import INPUT_NAME, variant_file
from codistill.export.onnx_graph import DeployableStudent, Normalization
from codistill.export.onnx_scoring import cpu_session
from codistill.export.parity import resized_batch
from codistill.export.variants import VARIANTS
from environment import (
    bench_parser,
    markdown_table,
    new_figure,
    num_classes,
    publish_table,
    save_figure,
)

Engine = Callable[[np.ndarray], object]
PROFILED_OPERATORS = 10
# Operator types (as ONNX Runtime's CPU profile names them) that do a student's matrix work.
MATRIX_OPERATORS = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--students", type=Path, default=Path("build/train"))
    parser.add_argument("--onnx", type=Path, default=Path("build/export"))
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--triton", action="store_true", help="also load the local endpoint")
    parser.add_argument("--repository", type=Path, default=Path("serving/model_repository"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--chart", type=Path, default=Path("docs/infer_speed.png"))
    return parser.parse_args()


PEAK_SIZE = 2048  # the side of the square float32 matrices whose product gauges the peak
PEAK_PROBES = ("torch matmul", "ORT MatMul")  # the engines' names of the two probes


def peak_probes(size: int = PEAK_SIZE) -> dict[str, Engine]:
    """Two calls that multiply two size×size float32 matrices: torch's and ONNX Runtime's.

    Timed in every round beside the engines (their batch argument is ignored), the better of
    the two gives that round's float32 matrix-product peak: each library's own kernels, and on
    some CPUs one of them is far from the hardware's rate.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a, b = torch.randn(size, size), torch.randn(size, size)
    shape = [size, size]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {"a": a.numpy(), "b": b.numpy()}
    torch_probe, ort_probe = PEAK_PROBES
    return {
        torch_probe: lambda _batch: torch.matmul(a, b),
        ort_probe: lambda _batch: session.run(None, inputs),
    }


def round_peaks(times: dict[str, list[float]], size: int = PEAK_SIZE) -> list[float]:
    """Each round's peak in GFLOP/s: the faster of the probes of ``peak_probes`` that round."""
    probes = zip(*(times[name] for name in PEAK_PROBES), strict=True)
    return [2 * size**3 / min(seconds) / 1e9 for seconds in probes]


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def forward_gflop(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """FLOPs of one forward pass on a 1×H×W×3 uint8 image, in GFLOP (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *size, 3, dtype=torch.uint8))
    return counter.get_total_flops() / 1e9


def deployable(student: torch.nn.Module, onnx_dir: Path) -> DeployableStudent:
    """The student as its exported graph runs it: the normalization and scale of the export."""
    contract = json.loads((onnx_dir / "preprocessing.json").read_text())
    stats = contract["normalization_in_graph"]
    normalization = Normalization(tuple(stats["mean"]), tuple(stats["std"]))
    return DeployableStudent(student, normalization, contract["inference_scale"]).eval()


def engines(role: str, student: torch.nn.Module, onnx_dir: Path) -> dict[str, Engine]:
    """Every way this benchmark runs ``role``: eager PyTorch and each graph that exists."""
    model = deployable(student, onnx_dir)

    @torch.no_grad()
    def eager(batch: np.ndarray) -> object:
        return model(torch.from_numpy(batch))

    found = {"PyTorch eager": eager}
    graphs = {"ORT FP32": onnx_dir / f"{role}.onnx"}
    graphs |= {f"ORT {v.upper()}": onnx_dir / variant_file(role, v) for v in VARIANTS}
    for name, path in graphs.items():
        if path.is_file():
            session = cpu_session(path)
            found[name] = lambda batch, s=session: s.run(None, {INPUT_NAME: batch})
    return found


def batch_of(images: list[np.ndarray], size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` 1×H×W×3 uint8 images resized to ``size`` and stacked, cycling through them."""
    return resized_batch([images[i % len(images)][0] for i in range(count)], size, count).numpy()


def time_engines(
    found: dict[str, Engine], batch: np.ndarray, rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of each engine: one warm-up call, then interleaved rounds.

    In each round an engine makes an untimed call before its timed one: the thread pool of
    the engine before it may still be spinning for work, and would otherwise share the cores
    with the first call only (the engine after a spinning one looked slower than it is).
    """
    for engine in found.values():
        engine(batch)
    times: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(rounds):
        for name, engine in found.items():
            engine(batch)
            times[name].append(_seconds(lambda e=engine: e(batch)))
    return times


def speed_rows(
    role: str, times: dict[str, list[float]], batch: int, gflop: float, peaks: list[float]
) -> list[list[str]]:
    """Table rows for one student at one batch size.

    The share of the peak is the median over the rounds of the engine's rate over that
    round's peak (``round_peaks``), so a machine whose speed drifts during the run does not
    set one phase's engine against another phase's peak.
    """
    eager = statistics.median(times["PyTorch eager"])
    rows = []
    for name, seconds in times.items():
        p50 = statistics.median(seconds)
        p95 = float(np.percentile(seconds, 95))
        rate = batch * gflop / p50
        share = statistics.median(
            batch * gflop / s / peak for s, peak in zip(seconds, peaks, strict=True)
        )
        rows.append(
            [
                role,
                name,
                str(batch),
                f"{p50 * 1000:.1f}",
                f"{p95 * 1000:.1f}",
                f"{batch / p50:.2f}",
                f"{eager / p50:.2f}x",
                f"{rate:.1f}",
                f"{100 * share:.0f}%",
            ]
        )
    return rows


def variant_rows(onnx_dir: Path) -> list[list[str]]:
    """The export stage's mIoU gate results, from ``variants.json``."""
    report = json.loads((onnx_dir / "variants.json").read_text())
    rows = []
    for role, student in report["students"].items():
        for variant in VARIANTS:
            if variant in student:
                entry = student[variant]
                rows.append(
                    [
                        role,
                        variant.upper(),
                        f"{student['fp32']['miou']:.4f}",
                        f"{entry['miou']:.4f}",
                        f"{entry['miou_drop_points']:.2f}",
                        "kept" if entry["kept"] else "dropped",
                    ]
                )
    return rows


def operator_times(path: Path, batch: np.ndarray, runs: int) -> dict[str, float]:
    """Milliseconds per call that each ONNX operator type takes in ``path`` (ORT's profiler)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="codistill-ort-profile-") as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: batch})  # warm-up, counted out below
        for _ in range(runs):
            session.run(None, {INPUT_NAME: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_call = len(kernels) // (runs + 1)
    totals: dict[str, float] = {}
    for event in kernels[per_call:]:
        op = event["args"]["op_name"]
        totals[op] = totals.get(op, 0.0) + event["dur"] / 1000 / runs
    return totals


def matrix_bound(times: dict[str, float]) -> tuple[float, float]:
    """The matrix operators' share of a graph's kernel time, and the speed-up were they free."""
    total = sum(times.values())
    matrix = sum(ms for op, ms in times.items() if op in MATRIX_OPERATORS)
    rest = total - matrix
    return matrix / total, total / rest if rest > 0 else math.inf


def profile_lines(onnx_dir: Path, images: list[np.ndarray], size: tuple[int, int]) -> list[str]:
    """Per student, where its FP32 and INT8 graphs spend one image's time, by operator type."""
    batch = batch_of(images, size, 1)
    lines = []
    for role in ROLES:
        graphs = {"FP32": onnx_dir / f"{role}.onnx", "INT8": onnx_dir / variant_file(role, "int8")}
        times = {
            name: operator_times(path, batch, 5) for name, path in graphs.items() if path.is_file()
        }
        names = list(times)

        def heaviest(op: str, times: dict[str, dict[str, float]] = times) -> float:
            return max(t.get(op, 0.0) for t in times.values())

        operators = sorted({op for t in times.values() for op in t}, key=heaviest, reverse=True)
        totals = {name: sum(t.values()) for name, t in times.items()}
        rows = [
            [op, *(f"{times[n].get(op, 0.0):.2f}" for n in names)]
            + [f"{100 * times[n].get(op, 0.0) / totals[n]:.1f}%" for n in names]
            for op in operators[:PROFILED_OPERATORS]
        ]
        rows.append(["all operators", *(f"{totals[n]:.2f}" for n in names), *["100%"] * len(names)])
        header = ["operator", *(f"{n} ms" for n in names), *(f"{n} share" for n in names)]
        lines += [
            "",
            f"`{role}`: the top {PROFILED_OPERATORS} operator types, one {size[0]}x{size[1]} "
            "image (ONNX Runtime's profiler, kernel time, mean of 5 calls after a warm-up):",
            "",
            *markdown_table(header, rows),
        ]
        share, bound = matrix_bound(times["FP32"])
        lines += [
            "",
            f"Matrix work ({', '.join(MATRIX_OPERATORS)}) is {100 * share:.0f} % of the FP32 "
            f"graph's kernel time: an INT8 graph that made it free and left the rest as it is "
            f"would run at most {bound:.2f}x the FP32 graph.",
        ]
    return lines


def speed_chart(rows: list[list[str]], path: Path) -> None:
    """p50 latency against throughput, one marker per student, engine and batch size."""
    figure, axis = new_figure(figsize=(7, 4.5))
    for role, marker in (("cnn", "o"), ("vit", "s")):
        for row in (r for r in rows if r[0] == role):
            _, engine, batch, p50, _, rate, *_ = row
            axis.scatter(float(rate), float(p50), marker=marker)
            axis.annotate(f"{role} {engine} b{batch}", (float(rate), float(p50)), fontsize=7)
    axis.set_xlabel("images / s")
    axis.set_ylabel("p50 latency per call (ms)")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def main() -> None:
    args = parse_args()
    params = load_params(args.params)
    size = tuple(args.size)
    images = evenly_spaced_images(args.prepared, "test", max(args.batches))
    students = load_students(params, args.students, num_classes(params))
    probes = peak_probes()
    peaks: list[float] = []
    rows = []
    flops = {}
    exported = {}
    for role, student in students.items():
        student.eval()
        flops[role] = forward_gflop(deployable(student, args.onnx), size)
        exported[role] = forward_gflop(deployable(inference_form(student), args.onnx), size)
        found = engines(role, student, args.onnx)
        for batch in args.batches:
            times = time_engines({**found, **probes}, batch_of(images, size, batch), args.rounds)
            batch_peaks = round_peaks(times)
            peaks += batch_peaks
            engine_times = {name: times[name] for name in found}
            rows += speed_rows(role, engine_times, batch, flops[role], batch_peaks)
    flop_text = ", ".join(
        f"{r} {g:.1f} GFLOP (its exported form {exported[r]:.1f})" for r, g in flops.items()
    )
    speed_chart(rows, args.chart)
    extra = [
        "",
        f"Latency against throughput: `{args.chart}`.",
        "",
        "### Faster variants: validation mIoU (from the export stage's `variants.json`)",
        "",
        *markdown_table(
            ["student", "variant", "FP32 mIoU", "variant mIoU", "drop (points)", "gate"],
            variant_rows(args.onnx),
        ),
    ]
    extra += [
        "",
        "### Where the graphs spend their time: FP32 against INT8",
        *profile_lines(args.onnx, images, size),
    ]
    if args.triton:
        from endpoint_speed import endpoint_lines  # tritonclient: only for the endpoint

        resized = [batch_of([x], size, 1) for x in images]
        extra += endpoint_lines(
            args.repository, args.onnx, resized, args.concurrency, args.duration
        )
    publish_table(
        args.out,
        "Inference speed per student",
        f"Resolution {size[0]}x{size[1]}, batch sizes {args.batches}, real CamVid test images, "
        f"CPU ({torch.get_num_threads()} intra-op threads for PyTorch; ONNX Runtime default). "
        f"Median (p50) and p95 of {args.rounds} interleaved rounds after one warm-up call each; "
        "in a round each engine makes an untimed call, then the timed one (so no engine shares "
        "the cores with the thread pool of the engine before it, still spinning). "
        f"Forward cost per image (torch FlopCounterMode, 2 FLOP per multiply-add): "
        f"{flop_text}. The exported graphs compute the trained function with less work where "
        "a student's head folds (`codistill.export.folding`); GFLOP/s and the share of the peak "
        "count the trained student's FLOPs for every engine (an effective rate), so engines "
        "compare on one scale. The float32 matmul peak is measured in every round beside the "
        "engines (the better of torch and ONNX Runtime on 2048x2048: median "
        f"{statistics.median(peaks):.0f} GFLOP/s, {min(peaks):.0f}–{max(peaks):.0f} over the "
        "rounds, as the machine's speed drifts); an engine's share of it is the median over "
        "the rounds of its rate over that round's peak. INT8 rows do the same operations in "
        "8-bit integer arithmetic and can exceed it.",
        ("torch", "onnxruntime"),
        [
            "student",
            "engine",
            "batch",
            "p50 ms",
            "p95 ms",
            "images/s",
            "speed-up vs eager",
            "GFLOP/s",
            "of matmul peak",
        ],
        rows,
        extra,
    )


if __name__ == "__main__":
    main()
