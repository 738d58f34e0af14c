"""First-request latency of the local Triton endpoint, with and without the configs' warm-up.

Each round starts ``codistill serve`` twice on the same repository, once running every
config's ``model_warmup`` request before the models are ready and once with ``--no-warmup``,
and times each model's first and second request on the same real test image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from codistill.data.samples import evenly_spaced_images
from codistill.serving.client import LabelsClient, Preprocessing
from codistill.serving.process import serve_in_background
from environment import bench_parser, publish_table


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--repository", type=Path, default=Path("serving/model_repository"))
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def first_two_requests(
    repository: Path, warmup: bool, image, models: list[str]
) -> dict[str, tuple[float, float]]:
    """Seconds of the first and the second request to each model of a fresh server."""
    options = () if warmup else ("--no-warmup",)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.log"
        with serve_in_background(repository, log, options) as server:
            client = LabelsClient(server.urls["http"])
            times = {}
            for model in models:
                seconds = []
                for _ in range(2):
                    start = time.perf_counter()
                    client.labels(model, image)
                    seconds.append(time.perf_counter() - start)
                times[model] = (seconds[0], seconds[1])
            client.close()
    return times


def main() -> None:
    args = parse_args()
    Preprocessing.load(args.repository / "preprocessing.json")
    models = sorted(p.name for p in args.repository.iterdir() if (p / "configs").is_dir())
    (image,) = evenly_spaced_images(args.prepared, "test", 1)
    samples: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for warmup in (True, False):
            for model, pair in first_two_requests(args.repository, warmup, image, models).items():
                samples.setdefault((model, warmup), []).append(pair)
    rows = []
    for (model, warmup), pairs in sorted(samples.items()):
        first = statistics.median(p[0] for p in pairs)
        second = statistics.median(p[1] for p in pairs)
        rows.append(
            [
                model,
                "on" if warmup else "off",
                f"{1000 * first:.0f}",
                f"{1000 * second:.0f}",
                f"{first / second:.2f}x",
            ]
        )
    height, width = image.shape[1:3]
    publish_table(
        args.out,
        "First request to the local Triton endpoint, with and without warm-up",
        f"One real test image ({height}x{width}, batch 1, HTTP), the first and the second request "
        f"to each model of a freshly started `codistill serve` (CPU configs), median of "
        f"{args.rounds} server starts per setting. With warm-up the server runs each config's "
        "`model_warmup` request (zeros at `serving.warmup_size`) before it reports ready.",
        ("torch", "onnxruntime", "tritonclient", "nvidia-pytriton"),
        ["model", "warm-up", "first request (ms)", "second request (ms)", "first / second"],
        rows,
    )


if __name__ == "__main__":
    main()
