"""A validation search of ``bench/studies.yaml``, and its table in docs/results.md.

Choosing among the candidates never looks at the test split. Each run keeps its result under
``bench/results/search/<search>/``; a run with a current result is not trained again, so the
search can be stopped and continued, and its table rewritten from the files alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from codistill.study.provenance import distinct_runs
from codistill.study.searches import (
    SEARCH_HEADER,
    SearchFiles,
    choice_line,
    collect,
    search_description,
    search_title,
    table_rows,
    train_missing,
)
from codistill.study.settings import load_studies
from codistill.study.shards import add_shard_argument
from environment import bench_parser, publish_table, tracking


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("search", help="a search named under `searches:` in --studies")
    parser.add_argument("--studies", type=Path, default=Path("bench/studies.yaml"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/search"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/search"))
    parser.add_argument("--candidates", nargs="+", help="train only these (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--borrow-from",
        type=Path,
        default=Path("bench/results/quality"),
        help="quality-study results whose runs a candidate may reuse (same identity)",
    )
    add_shard_argument(parser)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="tables only")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    search = load_studies(args.studies)["searches"][args.search]
    folders = (args.workdir / args.search, args.results / args.search)
    files = SearchFiles(args.params, args.prepared, args.validation, *folders, args.borrow_from)
    if args.train:
        options = (args.candidates, args.shard, tracking())
        train_missing(search, args.seeds, files, *options)
    results, current = collect(search, args.seeds, files)
    publish_table(
        args.out,
        search_title(args.search),
        search_description(search, args.seeds, files.results, args.borrow_from),
        ("torch", "timm"),
        SEARCH_HEADER,
        table_rows(search, results, current),
        extra=["", choice_line(search, results, args.seeds, current)],
        key=f"search-{args.search}",
        runs=distinct_runs(results),
    )


if __name__ == "__main__":
    main()
