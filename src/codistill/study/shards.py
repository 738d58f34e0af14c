"""Sharding a study's plan over processes side by side: ``--shard K/N``."""

from __future__ import annotations

import argparse


def add_shard_argument(parser: argparse.ArgumentParser) -> None:
    """``--shard K/N``: N processes side by side, this one training every N-th run from the K-th."""
    parser.add_argument(
        "--shard",
        type=parsed_shard,
        default=(0, 1),
        metavar="K/N",
        help="train only every N-th run of the plan, from the K-th (N processes side by side)",
    )


def parsed_shard(text: str) -> tuple[int, int]:
    """Parse `K/N` into (K, N), with 0 <= K < N."""
    try:
        shard, shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N") from None
    if not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be in 0..N-1 (N processes)")
    return shard, shards


def in_shard(index: int, shard: tuple[int, int]) -> bool:
    """Whether the plan's ``index``-th run belongs to shard (K, N)."""
    return index % shard[1] == shard[0]
