"""Time reading decoded training batches from the prepared shards against the raw PNGs.

Both paths return the same thing: an RGB uint8 image and a train-id label map per sample.
Rounds alternate between the two readers so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from codistill.data import ShardReader, create_reader
from codistill.data.codec import read_label_map, read_rgb
from environment import RESULTS, publish_table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/camvid"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    raw = create_reader(args.dataset, args.data)
    shards = ShardReader(args.prepared)
    rows = {row.sample_id: row for row in shards.split(args.split)}
    refs = [ref for ref in raw.samples(args.split) if ref.sample_id in rows]
    lut = raw.spec.lookup_table()
    rng = np.random.default_rng(0)

    def from_pngs(batch: list) -> list:
        return [(read_rgb(r.image_path), lut[read_label_map(r.mask_path)]) for r in batch]

    def from_shards(batch: list) -> list:
        return [shards.read(rows[r.sample_id]) for r in batch]

    timings: dict[str, list[float]] = {"PNG files": [], "shards": []}
    shape = None
    for _ in range(args.rounds):
        batch = [refs[i] for i in rng.choice(len(refs), size=args.batch, replace=False)]
        for name, read in (("PNG files", from_pngs), ("shards", from_shards)):
            start = time.perf_counter()
            samples = read(batch)
            timings[name].append(time.perf_counter() - start)
            shape = samples[0][0].shape
    png, shard = (statistics.median(timings[k]) for k in ("PNG files", "shards"))
    publish_table(
        args.out,
        "Data loading: prepared shards against raw PNGs",
        f"Decoded batches of {args.batch} random `{args.split}` samples (image + labels), "
        f"{shape[0]}x{shape[1]}, single process, page cache warm, median of "
        f"{args.rounds} alternating rounds.",
        ("numpy", "pillow"),
        ["source", "median ms / batch", "images / s", "ratio vs PNG"],
        [
            [name, f"{t * 1e3:.1f}", f"{args.batch / t:.0f}", f"{png / t:.2f}x"]
            for name, t in (("PNG files", png), ("shards", shard))
        ],
    )


if __name__ == "__main__":
    main()
