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
from codistill.data.base import dataset_spec
from codistill.study.plan import PlanError
from codistill.study.regime_tables import (
    STUDENT_NAMES,
    Results,
    ablation_rows,
    checkpoint_choice_lines,
    class_lines,
    diagnostics_lines,
    diagnostics_summary,
    headline,
    main_rows,
    probe_lines,
    tuned_lines,
)
from codistill.study.regimes import (
    ABLATIONS,
    MAIN,
    RegimeFiles,
    collect,
    plan,
    train_missing,
    tuned_variants,
)
from codistill.study.results import Scoring
from codistill.study.settings import load_studies, parse_overrides
from codistill.study.shards import add_shard_argument
from environment import (
    markdown_table,
    new_figure,
    publish_table,
    save_figure,
    tracking,
    write_section,
)

ALL_TERMS = "all (= ours)"


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


def resolved_regime(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The regime's name and entry, with ``--seeds``, ``--iterations`` and ``--set`` applied.

    Only the first regime, as listed, writes the README's headline, and only unchanged.

    ``--set`` changes the configuration, and so the runs' identity: their results are
    counted only by a call with the same ``--set``.
    """
    studies = load_studies(args.studies)
    regimes = studies["regimes"]
    name = args.regime or next(iter(regimes))
    if name not in regimes:
        raise SystemExit(f"{args.studies}: no regime {name!r} (found: {', '.join(regimes)})")
    regime = dict(regimes[name])
    params = {**regime.get("params", {}), **parse_overrides(args.set)}
    if args.iterations:
        name = f"{name}-{args.iterations}it"
        params["train.iterations"] = args.iterations
        params["train.checkpoint_every"] = max(1, args.iterations // 6)
    regime["methods"] = (*MAIN, *tuned_variants(regime, params, studies["searches"]))
    if args.seeds:
        regime["seeds"] = args.seeds
    variant = bool(args.iterations or args.set or args.seeds)
    regime["headline"] = name == next(iter(regimes)) and not variant
    return name, {**regime, "params": params}


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
        name, regime = resolved_regime(args)
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


def class_names(results: Results) -> tuple[str, ...]:
    """The class names of the dataset the study's runs were trained on."""
    run = next((r for runs in results.values() for r in runs), None)
    return dataset_spec(run["config"]["data"]["dataset"]).class_names if run else ()


def write_tables(
    args: argparse.Namespace, name: str, regime: dict[str, Any], results: Results, stale: list
) -> None:
    """docs/results.md's study section, the curves chart and (headline regime) the README's."""
    curves_png = args.curves_png or Path(f"docs/quality_curves-{name}.png")
    results[ALL_TERMS] = results["ours"]
    ablation_seeds = regime["ablation_seeds"]
    methods = [v.label for v in regime["methods"]]
    lines = ["### Probe: `independent` against iterations", "", *probe_lines(results, regime)]
    choice = checkpoint_choice_lines(results, regime.get("score_last", 1))
    lines += ["", *choice] if choice else []
    for role in ("cnn", "vit"):
        lines += [
            "",
            f"### {STUDENT_NAMES[role]}: test mIoU",
            "",
            *markdown_table(
                [
                    "method",
                    "runs",
                    "test mIoU (%)",
                    "vs independent: paired diff [95 % CI]",
                    "",
                    "vs the better of DML/KDCL",
                    "",
                ],
                main_rows(results, role, methods),
            ),
        ]
    against_default = tuned_lines(
        results, {v.label: v.method for v in regime["methods"] if v.search}
    )
    lines += ["", *against_default] if against_default else []
    labels = [v.label for v in ABLATIONS] + [ALL_TERMS]
    lines += [
        "",
        f"### Ablation: which terms (seeds {ablation_seeds})",
        "",
        *markdown_table(
            [
                "terms",
                "runs",
                "CNN test mIoU (%)",
                "ViT test mIoU (%)",
                "CNN vs independent",
                "ViT vs independent",
                f"CNN vs {ALL_TERMS}",
                f"ViT vs {ALL_TERMS}",
            ],
            ablation_rows(results, labels, ablation_seeds, ALL_TERMS),
        ),
        "",
        "### Per class: where `ours` gains and loses",
        *class_lines(results, "ours", class_names(results)),
        "",
        "### Diagnostics of `ours`",
        "",
        *diagnostics_lines(results["ours"]),
        "",
        f"Learning curves (validation, mean over seeds): `{curves_png}`.",
    ]
    if stale:
        lines += [
            "",
            f"Not counted: {len(stale)} result(s) made with other code, configuration, data or "
            f"scoring ({', '.join(stale)}); `python bench/quality.py --regime {name}` re-runs "
            "them.",
        ]
    if any(results[label] for label in methods):
        plot_curves(results, methods, curves_png)
    summary = " ".join(regime["description"].split())
    extended = (
        " A run the search made already is its kept students scored on the test split "
        "(`extended_from`)."
        if regime.get("score_last", 1) == 1
        else ""
    )
    tuned = "".join(
        f" Row `{v.label}`: `{v.method}` with the setting that the validation search "
        f"`{v.search}` chose.{extended}"
        for v in regime["methods"]
        if v.search
    )
    copied = (
        " A run with the configuration of another row's run at its seed is that run, copied "
        "with the file it came from (`borrowed_from`)."
        if any("borrowed_from" in r for runs in results.values() for r in runs)
        else ""
    )
    publish_table(
        args.out,
        f"CamVid: co-distillation against the baselines (regime `{name}`)",
        f"Regime `{name}` of `{args.studies}`: {summary}{tuned}{copied} Seeds {regime['seeds']} "
        f"(ablations {ablation_seeds}); each seed fixes both students' initial weights and the "
        "batch stream for every method. Score: test split, logits at the native size, mean over "
        f"the last {regime.get('score_last', 1)} checkpoint(s). A difference counts only where "
        "its 95 % t-interval over the paired seeds excludes 0; otherwise: no separation. "
        f"Per-run results: `{args.results / name}`.",
        ("torch", "timm"),
        [],
        [],
        lines,
        key=f"quality-{name}",
    )
    if regime["headline"]:
        headline_text = headline(results, f"Regime `{name}`: {summary}", methods)
        write_section(args.readme, "quality-headline", headline_text)
        write_section(args.readme, "quality-diagnostics", diagnostics_summary(results["ours"]))


if __name__ == "__main__":
    main()
