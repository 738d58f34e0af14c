"""Seconds per image of one plain ONNX Runtime session, measured in a process of its own.

    python bench/direct_rate.py GRAPH IMAGES.npy --passes 4

The endpoint benchmark's baseline: numpy and ONNX Runtime only (no torch and no other
engine warmed up in the same process), one call per image after a warm-up call, the median
over ``--passes`` passes over the images. Prints ``{"seconds_per_image": ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def seconds_per_image(graph: Path, images: np.ndarray, passes: int) -> float:
    """Median wall seconds of one session call on one image of ``images`` (N×H×W×3 uint8)."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: images[:1]})
    times = []
    for _ in range(passes):
        for index in range(len(images)):
            start = time.perf_counter()
            session.run(None, {name: images[index : index + 1]})
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument("images", type=Path, help="an .npy array of N×H×W×3 uint8 images")
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    rate = seconds_per_image(args.graph, np.load(args.images), args.passes)
    print(json.dumps({"seconds_per_image": rate}))


if __name__ == "__main__":
    main()
