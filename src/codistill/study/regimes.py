"""A regime of the studies file: its rows (methods, ablations, tuned settings) and runs.

A seed fixes both students' initial weights and the batch stream, the same for every method,
so the rows are compared seed by seed. A run is made the first way that applies: a copy of a
finished run of the regime with the same identity under another row (a tuned row that sets
what an ablation row sets); for a tuned row, the search's run at that seed, its kept students
scored on the test split; else training. A result with another identity is not counted and is
trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codistill.config import METHODS, RUN_ONLY_KEYS, Params
from codistill.data.gate import require_validated
from codistill.study.identity import accepted_identities, is_current
from codistill.study.plan import PlanError
from codistill.study.provenance import study_device
from codistill.study.regime_tables import Results
from codistill.study.results import RunSpec, Scoring, read_result, result_path, run_key
from codistill.study.reuse import borrow, extend
from codistill.study.runs import run, spec_params
from codistill.study.shards import in_shard
from codistill.study.tracking import tracked_study


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
# What a search's base may set beyond its regime's recipe: the method it tunes, run-only knobs.
NOT_RECIPE = ("train.method", *RUN_ONLY_KEYS)
Plan = list[tuple[Variant, RunSpec]]


@dataclass(frozen=True)
class RegimeFiles:
    """Where a regime's inputs, checkpoints and results are, and its searches'."""

    params: Path = Path("params.yaml")
    prepared: Path = Path("build/prepared/camvid")
    validation: Path = Path("build/validate")
    workdir: Path = Path("build/bench/quality")
    search_results: Path = Path("bench/results/search")
    search_workdir: Path = Path("build/bench/search")


def tuned_variants(
    regime: dict[str, Any], params: dict[str, Any], searches: dict[str, Any]
) -> tuple[Variant, ...]:
    """Rows of a method under settings a validation search chose (the regime's ``tuned``).

    Each entry names a search of the studies file and one of its candidates; the row
    trains the search's method with that candidate's own overrides over the regime's
    ``params``. The search's base must be those params, so that the choice was made on the
    recipe the row is run with.
    """
    variants: list[Variant] = []
    for entry in regime.get("tuned", []):
        if not isinstance(entry, dict) or {"search", "candidate"} - set(entry):
            raise PlanError(f"tuned: {entry!r} is not a mapping with search and candidate")
        name, candidate = entry["search"], entry["candidate"]
        search = searches.get(name)
        if search is None:
            raise PlanError(f"tuned: no search {name!r}")
        if candidate not in search["candidates"]:
            raise PlanError(f"tuned: no candidate {candidate!r} in search {name!r}")
        base = search.get("base", {})
        differing = sorted(
            key
            for key in {*base, *params}
            if key not in NOT_RECIPE and base.get(key) != params.get(key)
        )
        if differing:
            raise PlanError(
                f"tuned: search {name!r} ran another recipe than the regime: "
                + ", ".join(differing)
            )
        settings = search["candidates"][candidate]
        if not settings:
            raise PlanError(f"tuned: candidate {candidate!r} of {name!r} changes nothing")
        method = {**base, **settings}.get("train.method")
        if method is None:
            raise PlanError(f"tuned: search {name!r} names no train.method in its base")
        label, slug = f"{method} ({candidate})", f"{method}-{candidate}"
        variant = Variant(label, slug, method, settings=settings, search=name, candidate=candidate)
        if variant.slug in {v.slug for v in variants}:
            raise PlanError(f"tuned: {variant.label} is listed twice")
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
    files: RegimeFiles, regime_dir: Path, runs: Plan, scoring: Scoring
) -> tuple[Results, list[str]]:
    """Current results by row label, and the keys of results with another identity."""
    results: Results = {v.label: [] for v in (*MAIN, *ABLATIONS)}
    results.update({v.label: [] for v, _ in runs})
    stale = []
    for variant, run_spec in runs:
        result = read_result(result_path(regime_dir, run_spec.key))
        identity = accepted_identities(spec_params(run_spec, files.params), files.prepared, scoring)
        if is_current(result, identity):
            results[variant.label].append(result)
        elif result is not None:
            stale.append(run_spec.key)
    return results, stale


def train_missing(
    files: RegimeFiles,
    name: str,
    runs: Plan,
    scoring: Scoring,
    regime_dir: Path,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    tracking: bool = False,
) -> None:
    """Train the runs of this process's shard (``only`` these, if given) with no current result.

    With ``tracking`` each trained run is an MLflow run nested under the regime's parent run.
    """
    keys = {run_spec.key for _, run_spec in runs}
    unknown = sorted(set(only or ()) - keys)
    if unknown:
        raise PlanError(f"--only: {', '.join(unknown)} not in the plan of regime {name}")
    require_validated(files.prepared, files.validation)
    device = study_device()
    with tracked_study(name, tracking):
        for index, (variant, run_spec) in enumerate(runs):
            if not in_shard(index, shard) or (only and run_spec.key not in only):
                continue
            params = spec_params(run_spec, files.params)
            twin = borrow(run_spec, params, files.prepared, scoring, regime_dir, regime_dir)
            if twin is not None:
                print(f"{run_spec.key}: the same run as {twin.name}, copied", flush=True)
                continue
            if extend_from_search(files, variant, run_spec, params, scoring, regime_dir, device):
                print(f"{run_spec.key}: its search run scored on the test split", flush=True)
                continue
            run(
                run_spec,
                files.params,
                files.prepared,
                files.workdir / name,
                regime_dir,
                scoring,
                device,
                tracking=tracking,
            )


def extend_from_search(
    files: RegimeFiles,
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
        files.prepared,
        scoring,
        out,
        result_path(files.search_results / variant.search, key),
        files.search_workdir / variant.search / key,
        device,
    )
