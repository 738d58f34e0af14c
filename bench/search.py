"""A validation search: candidate settings on the same seeds, scored on validation only.

Choosing among the candidates never looks at the test split.

The candidates of each search are listed in ``bench/studies.yaml``. Each run keeps its result
under ``bench/results/search/<search>/``; a run with a current result is not trained again,
so the search can be stopped and continued, and its table rewritten from the files alone.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from codistill.config import ROLES
from codistill.data.gate import require_validated
from codistill.engine.precision import FLOAT32
from codistill.study.identity import accepted_identities, is_current
from codistill.study.provenance import study_device
from codistill.study.results import (
    RunSpec,
    Scoring,
    miou_by_seed,
    read_result,
    result_path,
    run_key,
    seconds_per_step,
)
from codistill.study.reuse import borrow
from codistill.study.runs import run, spec_params
from codistill.study.scoring import add_missing_counts
from codistill.study.settings import load_studies
from codistill.study.shards import add_shard_argument, in_shard
from codistill.study.statistics import mean_std, paired_interval
from environment import bench_parser, publish_table


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
    parser.add_argument(
        "--rerun-older", action="store_true", help="retrain runs of older weight-shaping code"
    )
    return parser.parse_args()


def specs(search: dict[str, Any], seeds: list[int]) -> list[RunSpec]:
    """One run per candidate and seed, the search's base overrides under each candidate's."""
    return [
        RunSpec(run_key(name, seed), name, seed, {**search.get("base", {}), **overrides})
        for name, overrides in search["candidates"].items()
        for seed in seeds
    ]


def settings_cell(overrides: dict[str, Any], base: dict[str, Any]) -> str:
    """The candidate's own overrides, as `key=value` pairs."""
    own = {k: v for k, v in overrides.items() if base.get(k) != v}
    return ", ".join(f"`{k}={v}`" for k, v in own.items()) or "(base)"


def table_rows(
    search: dict[str, Any], results: dict[str, list[dict[str, Any]]], current: set[str]
) -> list[list[str]]:
    """Per candidate: its settings, seeds, validation mIoU of each student, and seconds/step.

    With two or more seeds, each candidate's paired difference to its reference follows its
    mean, with the 95 % t-interval: the first candidate, or the one the search's ``compare``
    maps it to. ``current`` holds the keys of results made with the present identity; the
    others are marked.
    """
    base = search.get("base", {})
    names = list(search["candidates"])
    rows = []
    for name in names:
        runs = results[name]
        settings = settings_cell(search["candidates"][name], base)
        if not runs:
            rows.append([name, settings, "0", "-", "-", "-", ""])
            continue
        cells = [name, settings, str(len(runs))]
        reference = search.get("compare", {}).get(name, names[0])
        for role in ROLES:
            own = miou_by_seed(runs, role, "val")
            mean, std = mean_std(list(own.values()))
            cell = f"{mean:.2f}" + (f" ± {std:.2f}" if len(runs) > 1 else "")
            interval = paired_interval(own, miou_by_seed(results[reference], role, "val"))
            if name != reference and interval is not None and interval.n > 1:
                cell += f" (vs {reference}: {interval.cell()})"
            cells.append(cell)
        seconds = [s for r in runs if (s := seconds_per_step(r)) is not None]
        threads = "/".join(str(t) for t in sorted({r["machine"]["torch_threads"] for r in runs}))
        modes = "/".join(sorted({r.get("precision", FLOAT32) for r in runs}))
        cells.append(f"{statistics.median(seconds):.2f} ({threads}, {modes})" if seconds else "-")
        older = sum(r["key"] not in current for r in runs)
        made = f"{older} of {len(runs)} made otherwise" if older else "current"
        borrowed = sum("borrowed_from" in r for r in runs)
        cells.append(made + (f", {borrowed} from the quality study" if borrowed else ""))
        rows.append(cells)
    return rows


def choice_line(
    search: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    seeds: list[int],
    current: set[str],
) -> str:
    """The search's choice: the best validation mIoU, averaged over both students and the seeds.

    Only candidates with a current result (``current`` keys) at every one of ``seeds``
    compete; the first candidate is the reference the choice is set against.
    """

    def mean_miou(runs: list[dict[str, Any]]) -> float:
        return statistics.fmean(
            100 * r["scores"]["val"][role]["miou"] for r in runs for role in ROLES
        )

    if not search.get("choose", True):
        return "This search measures the paired differences above (`compare`); it chooses nothing."
    complete = {}
    for name, runs in results.items():
        made_now = [r for r in runs if r["key"] in current]
        if {r["seed"] for r in made_now} >= set(seeds):
            complete[name] = made_now
    if not complete:
        return "Choice: none yet (no candidate has a current run at every seed)."
    best = max(complete, key=lambda name: mean_miou(complete[name]))
    first = next(iter(search["candidates"]))
    line = (
        "Choice (the highest validation mIoU averaged over both students and the seeds, among "
        f"candidates with a current run at every seed): **{best}**, {mean_miou(complete[best]):.2f}"
    )
    if best != first and first in complete:
        line += f" against {first} {mean_miou(complete[first]):.2f}"
    waiting = len(search["candidates"]) - len(complete)
    return line + (f"; {waiting} candidate(s) without one yet." if waiting else ".")


def train_missing(
    args: argparse.Namespace, search: dict[str, Any], scoring: Scoring, results_dir: Path
) -> None:
    """Train this process's share of the chosen candidates' runs that have no current result.

    A run the quality study already made is borrowed from its results instead.
    """
    require_validated(args.prepared, args.validation)
    device = study_device()
    chosen = set(args.candidates or search["candidates"])
    todo = [spec for spec in specs(search, args.seeds) if spec.label in chosen]
    for index, spec in enumerate(todo):
        if not in_shard(index, args.shard):
            continue
        params = spec_params(spec, args.params)
        source = borrow(spec, params, args.prepared, scoring, results_dir, args.borrow_from)
        if source is not None:
            print(f"{spec.key}: borrowed from {source}", flush=True)
        folder = args.workdir / args.search / spec.key
        path = result_path(results_dir, spec.key)
        add_missing_counts(spec, params, args.prepared, path, folder, device)
        run(
            spec,
            args.params,
            args.prepared,
            args.workdir / args.search,
            results_dir,
            scoring,
            device,
            accept_older=not args.rerun_older,
        )


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    search = load_studies(args.studies)["searches"][args.search]
    results_dir = args.results / args.search
    scoring = Scoring(score_last=1, splits=("val",))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in search["candidates"]}
    if args.train:
        train_missing(args, search, scoring, results_dir)
    current = set()
    for spec in specs(search, args.seeds):
        result = read_result(result_path(results_dir, spec.key))
        if result is not None:
            results[spec.label].append(result)
            identity = accepted_identities(spec_params(spec, args.params), args.prepared, scoring)
            if is_current(result, identity):
                current.add(spec.key)
    publish_table(
        args.out,
        f"Validation search: {args.search}",
        " ".join(search["description"].split())
        + f" Validation split, seeds {args.seeds}; results in `{results_dir}`. "
        "A search only chooses: it also shows runs made with other code, configuration or "
        "data than the present ones, marked in the last column (`--rerun-older` trains them "
        "again). A candidate run that a quality study under "
        f"`{args.borrow_from}` already made (same identity) is not trained again: its "
        "validation scores are copied, with the file they came from (`borrowed_from`).",
        ("torch", "timm"),
        [
            "candidate",
            "settings",
            "runs",
            "CNN val mIoU (%)",
            "ViT val mIoU (%)",
            "s / step (threads, mode)",
            "made with",
        ],
        table_rows(search, results, current),
        extra=["", choice_line(search, results, args.seeds, current)],
        key=f"search-{args.search}",
    )


if __name__ == "__main__":
    main()
