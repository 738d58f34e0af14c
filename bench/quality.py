"""CamVid quality study: does co-distillation beat training alone, DML and KDCL.

Each regime of ``bench/studies.yaml`` fixes a schedule (iterations, batch, geometry) and the
seeds. A seed fixes both students' initial weights and the batch stream, the same for every
method, so methods are compared seed by seed: the tables give each method's mean and spread,
and its mean paired difference to ``independent`` and to the better of DML/KDCL with a 95 %
t-interval. A row claims a gain only where that interval excludes 0.

Every finished run is a JSON file under ``bench/results/quality/<regime>/`` (scores, curves,
config, commit, code digest, machine). A run whose result has the run's identity (code,
shaping configuration, data, scoring) is not trained again; a result with another identity
is not counted, is listed as stale, and is trained again. The tables are rewritten from the
files alone (``--no-train``).

A regime's ``tuned`` entries add rows of a method under a setting that a validation search
(``bench/search.py``) chose. A run is made the first way that applies: a copy of a finished
run of the regime with the same identity under another row (a tuned row that sets what an
ablation row sets); for a tuned row, the search's run at that seed, its kept students scored
on the test split; else training. Sharded processes (``--shard``) must read the same studies
file; a run another process is training is skipped, never trained twice (but its twin under
another row, which has no finished result to copy yet, is trained).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from codistill.config import ROLES
from codistill.study.plan import PlanError
from codistill.study.provenance import distinct_runs
from codistill.study.regime_report import (
    regime_description,
    regime_lines,
    regime_title,
    resolved_regime,
)
from codistill.study.regime_tables import STUDENT_NAMES, Results, diagnostics_summary, headline
from codistill.study.regimes import RegimeFiles, collect, plan, train_missing
from codistill.study.results import Scoring
from codistill.study.settings import parse_overrides
from codistill.study.shards import add_shard_argument
from environment import new_figure, publish_table, save_figure, tracking, write_section


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--regime",
        help="a regime under `regimes:` (default: the first, whose tables the README states)",
    )
    parser.add_argument("--studies", type=Path, default=Path("bench/studies.yaml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/quality"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/quality"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument(
        "--search-results",
        type=Path,
        default=Path("bench/results/search"),
        help="search results a tuned row's run is made from when the search ran it",
    )
    parser.add_argument("--search-workdir", type=Path, default=Path("build/bench/search"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--curves-png", type=Path, help="default: docs/quality_curves-<regime>.png")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="tables only")
    parser.add_argument("--no-tables", dest="tables", action="store_false")
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--seeds", type=int, nargs="+", help="instead of the regime's seeds")
    parser.add_argument("--only", nargs="+", metavar="KEY", help="train only these runs")
    add_shard_argument(parser)
    parser.add_argument(
        "--iterations",
        type=int,
        help="instead of the regime's iterations (results go to <regime>-<N>it, checkpoints "
        "at every sixth of the schedule)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = RegimeFiles(
        args.params,
        args.prepared,
        args.validation,
        args.workdir,
        args.search_results,
        args.search_workdir,
    )
    try:
        name, regime = resolved_regime(
            args.studies, args.regime, parse_overrides(args.set), args.iterations, args.seeds
        )
        regime_dir = args.results / name
        runs = plan(regime, args.ablations)
        scoring = Scoring(score_last=regime.get("score_last", 1))
        if args.train:
            train_missing(files, name, runs, scoring, regime_dir, args.only, args.shard, tracking())
    except PlanError as err:
        raise SystemExit(str(err)) from None
    if args.tables:
        results, stale = collect(files, regime_dir, runs, scoring)
        write_tables(args, name, regime, results, stale)


def plot_curves(results: Results, labels: list[str], path: Path) -> None:
    """Validation mIoU against iterations, mean over seeds, one panel per student."""
    figure, axes = new_figure(1, 2, figsize=(10, 4), sharey=True)
    for axis, role in zip(axes, ROLES, strict=True):
        for label in labels:
            runs = results[label]
            if not runs:
                continue
            xs = [c["iteration"] for c in runs[0]["checkpoints"]]
            ys = [
                statistics.fmean(100 * r["checkpoints"][i]["val"][role]["miou"] for r in runs)
                for i in range(len(xs))
            ]
            axis.plot(xs, ys, marker="o", label=f"{label} ({len(runs)} seeds)")
        axis.set_title(STUDENT_NAMES[role])
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation mIoU (%)")
    axes[0].legend()
    save_figure(figure, path)


def write_tables(
    args: argparse.Namespace, name: str, regime: dict[str, Any], results: Results, stale: list
) -> None:
    """docs/results.md's study section, the curves chart and (headline regime) the README's."""
    curves_png = args.curves_png or Path(f"docs/quality_curves-{name}.png")
    lines = regime_lines(name, regime, results, stale, curves_png)
    methods = [v.label for v in regime["methods"]]
    if any(results[label] for label in methods):
        plot_curves(results, methods, curves_png)
    description = regime_description(name, regime, results, args.studies, args.results / name)
    publish_table(
        args.out,
        regime_title(name),
        description,
        ("torch", "timm"),
        [],
        [],
        lines,
        key=f"quality-{name}",
        runs=distinct_runs(results),
    )
    if regime["headline"]:
        summary = " ".join(regime["description"].split())
        headline_text = headline(results, f"Regime `{name}`: {summary}", methods)
        write_section(args.readme, "quality-headline", headline_text)
        write_section(args.readme, "quality-diagnostics", diagnostics_summary(results["ours"]))


if __name__ == "__main__":
    main()
