"""Progress of a long loop: a bar on a terminal, one line per tenth in logs and CI jobs."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LINES_PER_LOOP = 10


def reported(items: Iterable[T], label: str, total: int, unit: str = "images") -> Iterator[T]:
    """Yield ``items``, reporting progress under ``label``.

    On a terminal this is a tqdm bar. Elsewhere (``dvc repro`` in a log, a CI job, a pod)
    a bar prints nothing useful, so one line such as ``evaluate val: 20/101 images,
    3.1 images/s, ETA 0m26s`` goes to stdout after every tenth of the loop and at its end.
    """
    if sys.stdout.isatty():
        yield from tqdm(items, desc=label, total=total, unit=unit.rstrip("s"))
        return
    every = max(1, -(-total // LINES_PER_LOOP))
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        if done % every == 0 or done == total:
            elapsed = time.perf_counter() - start
            rate = done / elapsed if elapsed > 0 else 0.0
            left = round((total - done) / rate) if rate else 0
            print(
                f"{label}: {done}/{total} {unit}, {rate:.3g} {unit}/s, "
                f"ETA {left // 60}m{left % 60:02d}s",
                flush=True,
            )
