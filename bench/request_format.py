"""Request size and throughput of the served students, float input against the raw image.

Serves two model repositories of the same students in turns: one whose graphs take FP32
N×3×H×W (the client casts, normalizes and moves channels first, as served graphs did before
they took the raw image) and one whose graphs take UINT8 N×H×W×3 as read from the PNG. Each
repository's ``preprocessing.json`` says which. Every model is loaded by the same closed-loop
clients (``run_load``, dynamic batching on), on the same real test images; the order of the
two alternates between rounds so both see the same machine load, and each row's ratio is
taken within its round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from codistill.data.samples import evenly_spaced_images
from codistill.serving.loadtest import run_load
from codistill.serving.process import serve_in_background
from environment import bench_parser, publish_table

FORMATS = ("before", "after")


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--before", type=Path, required=True, help="repository, FP32 NCHW graphs")
    parser.add_argument(
        "--after", type=Path, default=Path("serving/model_repository"), help="UINT8 NHWC graphs"
    )
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per row")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--context", default="", help="a sentence on where the repositories came from"
    )
    return parser.parse_args()


def requests_for(repository: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays a client sends to ``repository``'s graphs for 1×H×W×3 uint8 ``images``."""
    contract = json.loads((repository / "preprocessing.json").read_text())
    if contract["layout"].startswith("NHWC"):
        return images
    if not contract["layout"].startswith("NCHW"):
        raise SystemExit(f"{repository}: unknown input layout {contract['layout']!r}")
    mean = np.asarray(contract["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(contract["std"], np.float32).reshape(1, 3, 1, 1)
    return [
        ((image.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
        for image in images
    ]


def load_repository(
    repository: Path, requests: list[np.ndarray], models: list[str], args: argparse.Namespace
) -> dict[tuple[str, int], float]:
    """Images per second of each model at each concurrency, on a fresh server."""
    rates = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        serve_in_background(repository, Path(folder) / "serve.log") as server,
    ):
        for model in models:
            for concurrency in args.concurrency:
                report = run_load(server.urls["http"], model, requests, concurrency, args.duration)
                if report.errors:
                    raise SystemExit(f"{repository} {model}: {report.first_error}")
                rates[model, concurrency] = report.images_per_s
    return rates


def main() -> None:
    args = parse_args()
    images = evenly_spaced_images(args.prepared, "test", args.images)
    repositories = {"before": args.before, "after": args.after}
    requests = {name: requests_for(repo, images) for name, repo in repositories.items()}
    models = sorted(p.name for p in args.after.iterdir() if (p / "configs").is_dir())
    rates: dict[str, list[dict[tuple[str, int], float]]] = {name: [] for name in FORMATS}
    for round_index in range(args.rounds):
        order = FORMATS if round_index % 2 == 0 else FORMATS[::-1]
        for name in order:
            rates[name].append(load_repository(repositories[name], requests[name], models, args))
    rows = []
    for model in models:
        for concurrency in args.concurrency:
            key = (model, concurrency)
            before = statistics.median(r[key] for r in rates["before"])
            after = statistics.median(r[key] for r in rates["after"])
            ratio = statistics.median(
                a[key] / b[key] for a, b in zip(rates["after"], rates["before"], strict=True)
            )
            rows.append(
                [
                    model,
                    str(concurrency),
                    f"{requests['before'][0].nbytes / 1e6:.2f}",
                    f"{requests['after'][0].nbytes / 1e6:.2f}",
                    f"{before:.2f}",
                    f"{after:.2f}",
                    f"{ratio:.2f}x",
                ]
            )
    height, width = images[0].shape[1:3]
    publish_table(
        args.out,
        "Served input: FP32 N×3×H×W against UINT8 N×H×W×3",
        f"The same students served twice by `codistill serve` (CPU configs, dynamic batching "
        f"on): graphs taking the normalized FP32 image (before) and graphs taking the raw UINT8 "
        f"RGB image, normalizing inside (after). {len(images)} real test images at "
        f"{height}x{width}, batch 1 per request, HTTP, {args.duration:g} s per row, closed-loop "
        f"clients; median of {args.rounds} rounds, the order alternating, and the ratio taken "
        f"within each round. {args.context}".rstrip(),
        ("torch", "onnxruntime", "tritonclient", "nvidia-pytriton"),
        [
            "model",
            "clients",
            "request MB before",
            "request MB after",
            "images/s before",
            "images/s after",
            "after / before",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
