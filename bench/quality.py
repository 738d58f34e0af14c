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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codistill.config import METHODS, RUN_ONLY_KEYS, Params
from codistill.data.base import dataset_spec
from codistill.data.gate import require_validated
from codistill.study.identity import accepted_identities, is_current
from codistill.study.provenance import study_device
from codistill.study.results import RunSpec, Scoring, read_result, result_path, run_key
from codistill.study.reuse import borrow, extend
from codistill.study.runs import run, spec_params
from codistill.study.settings import load_studies, parse_overrides
from codistill.study.shards import add_shard_argument, in_shard
from environment import markdown_table, publish_table, write_section
from quality_tables import (
    STUDENT_NAMES,
    Results,
    ablation_rows,
    checkpoint_choice_lines,
    class_lines,
    diagnostics_lines,
    diagnostics_summary,
    headline,
    main_rows,
    plot_curves,
    probe_lines,
    tuned_lines,
)


@dataclass(frozen=True)
class Variant:
    """One row of a table: a method, the terms forced on or off, and other settings."""

    label: str
    slug: str
    method: str
    switches: dict[str, bool] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    search: str = ""  # a tuned row's search, and its candidate there
    candidate: str = ""

    def overrides(self) -> dict[str, Any]:
        """The ``params.yaml`` keys this row sets."""
        switches = {f"train.{k}": v for k, v in self.switches.items()}
        return {"train.method": self.method, **switches, **self.settings}


MAIN = tuple(Variant(method, method, method) for method in METHODS)
ABLATIONS = (
    Variant("HFD only", "hfd-only", "ours", {"hfd": True, "rbsd": False, "pbsd": False}),
    Variant("region-BSD only", "rbsd-only", "ours", {"hfd": False, "rbsd": True, "pbsd": False}),
    Variant("pixel-BSD only", "pbsd-only", "ours", {"hfd": False, "rbsd": False, "pbsd": True}),
    Variant("BSD (region + pixel)", "bsd", "ours", {"hfd": False, "rbsd": True, "pbsd": True}),
)
ALL_TERMS = "all (= ours)"
# What a search's base may set beyond its regime's recipe: the method it tunes, run-only knobs.
NOT_RECIPE = ("train.method", *RUN_ONLY_KEYS)
Plan = list[tuple[Variant, RunSpec]]


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


def tuned_variants(
    regime: dict[str, Any], params: dict[str, Any], searches: dict[str, Any]
) -> tuple[Variant, ...]:
    """Rows of a method under settings a validation search chose (the regime's ``tuned``).

    Each entry names a search of ``bench/studies.yaml`` and one of its candidates; the row
    trains the search's method with that candidate's own overrides over the regime's
    ``params``. The search's base must be those params, so that the choice was made on the
    recipe the row is run with.
    """
    variants: list[Variant] = []
    for entry in regime.get("tuned", []):
        if not isinstance(entry, dict) or {"search", "candidate"} - set(entry):
            raise SystemExit(f"tuned: {entry!r} is not a mapping with search and candidate")
        name, candidate = entry["search"], entry["candidate"]
        search = searches.get(name)
        if search is None:
            raise SystemExit(f"tuned: no search {name!r}")
        if candidate not in search["candidates"]:
            raise SystemExit(f"tuned: no candidate {candidate!r} in search {name!r}")
        base = search.get("base", {})
        differing = sorted(
            key
            for key in {*base, *params}
            if key not in NOT_RECIPE and base.get(key) != params.get(key)
        )
        if differing:
            raise SystemExit(
                f"tuned: search {name!r} ran another recipe than the regime: "
                + ", ".join(differing)
            )
        settings = search["candidates"][candidate]
        if not settings:
            raise SystemExit(f"tuned: candidate {candidate!r} of {name!r} changes nothing")
        method = {**base, **settings}.get("train.method")
        if method is None:
            raise SystemExit(f"tuned: search {name!r} names no train.method in its base")
        label, slug = f"{method} ({candidate})", f"{method}-{candidate}"
        variant = Variant(label, slug, method, settings=settings, search=name, candidate=candidate)
        if variant.slug in {v.slug for v in variants}:
            raise SystemExit(f"tuned: {variant.label} is listed twice")
        variants.append(variant)
    return tuple(variants)


def plan(regime: dict[str, Any], ablations: bool) -> Plan:
    """Every run of the regime: the main rows, the tuned rows, then the ablations.

    Within each group seed by seed, so that paired sets complete early.
    """
    tuned = tuple(v for v in regime["methods"] if v.search)
    groups = [(MAIN, regime["seeds"]), (tuned, regime["seeds"])]
    if ablations:
        groups.append((ABLATIONS, regime["ablation_seeds"]))
    return [(v, spec(v, s, regime)) for variants, seeds in groups for s in seeds for v in variants]


def spec(variant: Variant, seed: int, regime: dict[str, Any]) -> RunSpec:
    """The run of ``variant`` at ``seed`` under the regime's overrides."""
    return RunSpec(
        run_key(variant.slug, seed),
        variant.label,
        seed,
        {**regime.get("params", {}), **variant.overrides()},
    )


def collect(
    args: argparse.Namespace, regime_dir: Path, runs: Plan, scoring: Scoring
) -> tuple[Results, list[str]]:
    """Current results by row label, and the keys of results with another identity."""
    results: Results = {v.label: [] for v in (*MAIN, *ABLATIONS)}
    results.update({v.label: [] for v, _ in runs})
    stale = []
    for variant, run_spec in runs:
        result = read_result(result_path(regime_dir, run_spec.key))
        identity = accepted_identities(spec_params(run_spec, args.params), args.prepared, scoring)
        if is_current(result, identity):
            results[variant.label].append(result)
        elif result is not None:
            stale.append(run_spec.key)
    return results, stale


def train_missing(
    args: argparse.Namespace,
    name: str,
    runs: Plan,
    scoring: Scoring,
    regime_dir: Path,
) -> None:
    """Train the runs of this process's shard that have no current result."""
    keys = {run_spec.key for _, run_spec in runs}
    unknown = sorted(set(args.only or ()) - keys)
    if unknown:
        raise SystemExit(f"--only: {', '.join(unknown)} not in the plan of regime {name}")
    require_validated(args.prepared, args.validation)
    device = study_device()
    for index, (variant, run_spec) in enumerate(runs):
        if not in_shard(index, args.shard) or (args.only and run_spec.key not in args.only):
            continue
        params = spec_params(run_spec, args.params)
        twin = borrow(run_spec, params, args.prepared, scoring, regime_dir, regime_dir)
        if twin is not None:
            print(f"{run_spec.key}: the same run as {twin.name}, copied", flush=True)
            continue
        if extend_from_search(args, variant, run_spec, params, scoring, regime_dir, device):
            print(f"{run_spec.key}: its search run scored on the test split", flush=True)
            continue
        run(
            run_spec,
            args.params,
            args.prepared,
            args.workdir / name,
            regime_dir,
            scoring,
            device,
        )


def extend_from_search(
    args: argparse.Namespace,
    variant: Variant,
    run_spec: RunSpec,
    params: Params,
    scoring: Scoring,
    out: Path,
    device: torch.device,
) -> bool:
    """Make a tuned row's run from the search's run at its seed, if that has this configuration."""
    if not variant.search:
        return False
    key = run_key(variant.candidate, run_spec.seed)
    return extend(
        run_spec,
        params,
        args.prepared,
        scoring,
        out,
        result_path(args.search_results / variant.search, key),
        args.search_workdir / variant.search / key,
        device,
    )


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name, regime = resolved_regime(args)
    regime_dir = args.results / name
    runs = plan(regime, args.ablations)
    scoring = Scoring(score_last=regime.get("score_last", 1))
    if args.train:
        train_missing(args, name, runs, scoring, regime_dir)
    if args.tables:
        results, stale = collect(args, regime_dir, runs, scoring)
        write_tables(args, name, regime, results, stale)


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
