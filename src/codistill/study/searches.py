"""A validation search: candidate settings on the same seeds, scored on validation only.

Choosing among the candidates never looks at the test split. Each run keeps its result under
the search's results folder; a run with a current result is not trained again, so the search
can be stopped and continued, and its table rewritten from the files alone. A result made
with other code, configuration or data is shown, marked, but never counted, and the next
search that trains trains its run again (the policy of every study).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from codistill.study.shards import in_shard
from codistill.study.statistics import mean_std, paired_interval
from codistill.study.tracking import tracked_study

# A search scores the last checkpoint on the validation split only.
SCORING = Scoring(score_last=1, splits=("val",))


@dataclass(frozen=True)
class SearchFiles:
    """Where one search's inputs, checkpoints and results are."""

    params: Path
    prepared: Path
    validation: Path
    workdir: Path  # the search's own folder of run folders
    results: Path  # the search's own folder of result files
    borrow_from: Path  # quality-study results a candidate may reuse (same identity)


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


def step_time_cell(runs: list[dict[str, Any]], per_model: bool) -> str:
    """Median seconds per uninterrupted step (threads, numeric mode), per CPU model if asked."""
    models = sorted({r["machine"].get("cpu") for r in runs}, key=str) if per_model else [None]
    cells = []
    for model in models:
        timed = [r for r in runs if model is None or r["machine"].get("cpu") == model]
        seconds = [s for r in timed if (s := seconds_per_step(r)) is not None]
        if not seconds:
            continue
        threads = "/".join(str(t) for t in sorted({r["machine"]["torch_threads"] for r in timed}))
        modes = "/".join(sorted({r.get("precision", FLOAT32) for r in timed}))
        where = f", {model}" if per_model else ""
        cells.append(f"{statistics.median(seconds):.2f} ({threads}, {modes}{where})")
    return "; ".join(cells) or "-"


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
    many_models = len({r["machine"].get("cpu") for runs in results.values() for r in runs}) > 1
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
        cells.append(step_time_cell(runs, many_models))
        older = sum(r["key"] not in current for r in runs)
        made = f"{older} of {len(runs)} made otherwise" if older else "current"
        borrowed = sum("borrowed_from" in r for r in runs)
        cells.append(made + (f", {borrowed} from the quality study" if borrowed else ""))
        rows.append(cells)
    return rows


def mean_val_miou(runs: list[dict[str, Any]]) -> float:
    """Validation mIoU (%) averaged over both students and ``runs``."""
    return statistics.fmean(100 * r["scores"]["val"][role]["miou"] for r in runs for role in ROLES)


def complete_candidates(
    results: dict[str, list[dict[str, Any]]], seeds: list[int], current: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """The candidates with a current result (``current`` keys) at every one of ``seeds``."""
    complete = {}
    for name, runs in results.items():
        made_now = [r for r in runs if r["key"] in current]
        if {r["seed"] for r in made_now} >= set(seeds):
            complete[name] = made_now
    return complete


def chosen_candidate(
    results: dict[str, list[dict[str, Any]]], seeds: list[int], current: set[str]
) -> str | None:
    """The choice rule: the complete candidate with the best mean validation mIoU, if any."""
    complete = complete_candidates(results, seeds, current)
    return max(complete, key=lambda name: mean_val_miou(complete[name])) if complete else None


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
    if not search.get("choose", True):
        return "This search measures the paired differences above (`compare`); it chooses nothing."
    complete = complete_candidates(results, seeds, current)
    best = chosen_candidate(results, seeds, current)
    if best is None:
        return "Choice: none yet (no candidate has a current run at every seed)."
    first = next(iter(search["candidates"]))
    line = (
        "Choice (the highest validation mIoU averaged over both students and the seeds, among "
        f"candidates with a current run at every seed): **{best}**, "
        f"{mean_val_miou(complete[best]):.2f}"
    )
    if best != first and first in complete:
        line += f" against {first} {mean_val_miou(complete[first]):.2f}"
    waiting = len(search["candidates"]) - len(complete)
    return line + (f"; {waiting} candidate(s) without one yet." if waiting else ".")


def train_missing(
    search: dict[str, Any],
    seeds: list[int],
    files: SearchFiles,
    candidates: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    tracking: bool = False,
) -> None:
    """Train this process's share of the chosen candidates' runs that have no current result.

    A run the quality study already made is borrowed from its results instead. With
    ``tracking`` each trained run is an MLflow run nested under the search's parent run.
    """
    require_validated(files.prepared, files.validation)
    device = study_device()
    chosen = set(candidates or search["candidates"])
    todo = [spec for spec in specs(search, seeds) if spec.label in chosen]
    with tracked_study(files.results.name, tracking):
        for index, spec in enumerate(todo):
            if not in_shard(index, shard):
                continue
            params = spec_params(spec, files.params)
            source = borrow(spec, params, files.prepared, SCORING, files.results, files.borrow_from)
            if source is not None:
                print(f"{spec.key}: borrowed from {source}", flush=True)
            path = result_path(files.results, spec.key)
            add_missing_counts(spec, params, files.prepared, path, files.workdir / spec.key, device)
            run(
                spec,
                files.params,
                files.prepared,
                files.workdir,
                files.results,
                SCORING,
                device,
                tracking=tracking,
            )


def collect(
    search: dict[str, Any], seeds: list[int], files: SearchFiles
) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
    """Every result of the search's runs by candidate, and the keys of the current ones."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in search["candidates"]}
    current = set()
    for spec in specs(search, seeds):
        result = read_result(result_path(files.results, spec.key))
        if result is not None:
            results[spec.label].append(result)
            params = spec_params(spec, files.params)
            if is_current(result, accepted_identities(params, files.prepared, SCORING)):
                current.add(spec.key)
    return results, current


SEARCH_HEADER = [
    "candidate",
    "settings",
    "runs",
    "CNN val mIoU (%)",
    "ViT val mIoU (%)",
    "s / step (threads, mode)",
    "made with",
]


def search_title(name: str) -> str:
    """The heading of the search's section."""
    return f"Validation search: {name}"


def search_description(
    search: dict[str, Any], seeds: list[int], results: Path, borrow_from: Path
) -> str:
    """What the search is, on which seeds, where its results are and what it shows."""
    return (
        " ".join(search["description"].split())
        + f" Validation split, seeds {seeds}; results in `{results}`. "
        "A search only chooses: it also shows runs made with other code, configuration or "
        "data than the present ones, marked in the last column (the next search that trains "
        "trains them again). A candidate run that a quality study under "
        f"`{borrow_from}` already made (same identity) is not trained again: its "
        "validation scores are copied, with the file they came from (`borrowed_from`)."
    )


def reference_seeds(search: dict[str, Any], results: Path) -> list[int]:
    """The seeds the search's first candidate, its reference, has results for."""
    first = next(iter(search["candidates"]))
    made = (read_result(p) for p in results.glob(f"{first}-seed*.json"))
    return sorted({r["seed"] for r in made if r is not None and r.get("label", first) == first})
