"""Seconds per image of one plain ONNX Runtime session, in a process of its own.

    echo 4 | python bench/direct_rate.py GRAPH IMAGES.npy

The endpoint benchmark's baseline: numpy and ONNX Runtime only (no torch and no other engine
warmed up in the same process). The session is opened and warmed up once; then each line
read from stdin names a number of passes over the images (at least 1), one call per image,
and is answered with one line ``{"seconds_per_image": ...}``, the median over those calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def seconds_per_image(session: ort.InferenceSession, images: np.ndarray, passes: int) -> float:
    """Median wall seconds of one call on one image, over ``passes`` passes over ``images``."""
    name = session.get_inputs()[0].name
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
    args = parser.parse_args()
    images = np.load(args.images)
    session = ort.InferenceSession(str(args.graph), providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: images[:1]})  # warm-up, not timed
    for line in sys.stdin:
        rate = seconds_per_image(session, images, int(line))
        print(json.dumps({"seconds_per_image": rate}), flush=True)


if __name__ == "__main__":
    main()
