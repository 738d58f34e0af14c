"""``codistill study plan|run|report``: a paired-seed study driven by its plan file."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from codistill.study.plan import IncompleteStudyError, PlanError, StudyPlan, load_plan
from codistill.study.results import STUDY_SPLITS, RunSpec, Scoring, read_result, run_key

TEST = "test"
# Where the regimes of a studies file keep their results, one folder per regime.
REGIME_RESULTS = Path("bench/results/quality")
SEARCH_RESULTS = Path("bench/results/search")


def plan_specs(plan: StudyPlan) -> list[RunSpec]:
    """Every run of the plan, seed by seed: a seed's rows before the next seed's.

    A study that takes several sittings, on machines of other CPU models, so pairs each
    seed's rows on one machine (the machine check in docs/results.md: another CPU model
    moves a run about as far as another seed does); shards (``in_shard``) keep that order.
    """
    return [
        RunSpec(run_key(row, seed), row, seed, plan.row_overrides(row))
        for seed in plan.seeds
        for row in plan.rows
    ]


def plan_scoring(plan: StudyPlan) -> Scoring:
    """The last checkpoint, scored on the plan's split and the splits reported beside it."""
    splits = {plan.split, *plan.reported}
    return Scoring(score_last=1, splits=tuple(s for s in STUDY_SPLITS if s in splits))


def results_folder(args: argparse.Namespace, plan: StudyPlan) -> Path:
    """``--results``, or a folder named after the plan beside the plan file."""
    return args.results or args.plan_file.parent / plan.name


def finished_results(results: Path) -> list[dict[str, Any]]:
    """Every result file in ``results``."""
    return [r for path in sorted(results.glob("*.json")) if (r := read_result(path))]


def plan_stamp(args: argparse.Namespace, plan: StudyPlan, results: Path) -> dict[str, str]:
    """What each test result records: the committed plan's blob ({} for a validation study).

    Scoring the test split needs the plan committed, unchanged, and the plan of every test
    result already made; otherwise this raises ``PreregistrationError``.
    """
    from codistill.study.preregistration import BLOB_KEY, require_unchanged_plan

    if TEST not in plan_scoring(plan).splits:
        return {}
    return {BLOB_KEY: require_unchanged_plan(args.plan_file, finished_results(results))}


def run_states(args: argparse.Namespace, plan: StudyPlan) -> list[tuple[RunSpec, str]]:
    """Each run and its state: done, made otherwise, unfinished, or to train.

    Resolving every run's parameters also checks each row's overrides against the schema.
    """
    from codistill.engine.hooks import LAST
    from codistill.study.identity import current_result
    from codistill.study.results import result_path
    from codistill.study.runs import spec_params

    results, scoring = results_folder(args, plan), plan_scoring(plan)
    workdir = args.workdir / plan.name
    states = []
    for spec in plan_specs(plan):
        params = spec_params(spec, args.params)
        if current_result(spec, params, args.prepared, scoring, results) is not None:
            state = "done"
        elif result_path(results, spec.key).is_file():
            state = "made otherwise (other code, settings or data): to train again"
        elif (workdir / spec.key / LAST).is_file():
            state = "unfinished: resumes"
        else:
            state = "to train"
        states.append((spec, state))
    return states


def show_plan(args: argparse.Namespace, plan: StudyPlan) -> int:
    """Print the plan's runs and their states; 0 when every run is done."""
    states = run_states(args, plan)
    print(
        f"{args.plan_file}: {len(plan.rows)} rows × {len(plan.seeds)} seeds, scored on "
        f"{plan.split}, {len(plan.primary) * len(plan.students)} primary comparisons"
    )
    for spec, state in states:
        print(f"  {spec.key}: {state}")
    done = sum(state == "done" for _, state in states)
    print(f"{done} of {len(states)} runs done; results in {results_folder(args, plan)}")
    return 0 if done == len(states) else 1


def train_plan(args: argparse.Namespace, plan: StudyPlan) -> int:
    """Train and score every missing run of this shard; 0 when all of them are done."""
    import torch

    from codistill.data.gate import require_validated
    from codistill.study.provenance import study_device
    from codistill.study.runs import run
    from codistill.study.shards import in_shard
    from codistill.study.tracking import study_parent_run

    if args.threads:
        torch.set_num_threads(args.threads)
    results, scoring = results_folder(args, plan), plan_scoring(plan)
    stamp = plan_stamp(args, plan, results)
    require_validated(args.prepared, args.validation)
    device = study_device()
    with study_parent_run(plan.name) if args.tracking else nullcontext():
        skipped = 0
        for index, spec in enumerate(plan_specs(plan)):
            if not in_shard(index, args.shard):
                continue
            result = run(
                spec,
                args.params,
                args.prepared,
                args.workdir / plan.name,
                results,
                scoring,
                device,
                stamp=stamp,
                tracking=args.tracking,
            )
            skipped += result is None
    return 1 if skipped else 0


def publish_report(out: Path, heading: list[str], lines: list[str]) -> int:
    """Write ``heading`` and ``lines`` to ``out``, print the lines and where they went; 0."""
    from codistill.artifacts import write_text_atomic

    write_text_atomic(out, "\n".join([*heading, "", *lines, ""]))
    print("\n".join(lines))
    print(f"\nwritten to {out}")
    return 0


def write_report(args: argparse.Namespace, plan: StudyPlan) -> int:
    """Analyse the finished runs as the plan fixes it; write and print the report."""
    from codistill.artifacts import write_text_atomic
    from codistill.data.base import dataset_spec
    from codistill.study.confirmation import confirm
    from codistill.study.image_counts import counts_path, read_image_counts
    from codistill.study.provenance import made_with_lines
    from codistill.study.results import result_path
    from codistill.study.runs import spec_params
    from codistill.study.tables import confirmation_lines, headline_lines

    results = results_folder(args, plan)
    if args.readme:
        require_headline_section(args.readme)  # refused before any work
    plan_stamp(args, plan, results)  # the plan the test results were scored under
    pending = [f"{spec.key} ({state})" for spec, state in run_states(args, plan) if state != "done"]
    if pending:
        raise IncompleteStudyError(f"{plan.name}: runs not done: {', '.join(pending)}")
    runs = {row: {} for row in plan.rows}
    for spec in plan_specs(plan):
        counts = counts_path(result_path(results, spec.key))
        if not counts.is_file():
            raise IncompleteStudyError(
                f"{spec.key}: no per-image counts ({counts}); train it again"
            )
        try:
            runs[spec.label][spec.seed] = read_image_counts(counts)
        except ValueError as err:
            raise IncompleteStudyError(str(err)) from None
    params = spec_params(plan_specs(plan)[0], args.params)
    class_names = dataset_spec(params.data.dataset).class_names
    confirmation = confirm(plan, runs, class_names)
    lines = confirmation_lines(confirmation, runs, class_names)
    made_with = made_with_lines(read_result(result_path(results, s.key)) for s in plan_specs(plan))
    heading = [f"# Study `{plan.name}`", "", *made_with]
    out = args.out or results / "report.md"
    code = publish_report(out, heading, lines)
    if args.readme:
        write_text_atomic(
            args.readme, with_headline(args.readme, headline_lines(confirmation, runs, str(out)))
        )
    return code


def require_headline_section(readme: Path) -> str:
    """``readme``'s text; PlanError naming the file if it is missing or has no headline section."""
    from codistill.markdown import replace_section, section_markers
    from codistill.study.tables import HEADLINE_KEY

    if not readme.is_file():
        raise PlanError(f"{readme}: no such file for the headline to go in")
    text = readme.read_text()
    if replace_section(text, HEADLINE_KEY, []) is None:
        begin, end = section_markers(HEADLINE_KEY)
        raise PlanError(f"{readme}: no {begin} ... {end} section for the headline to go in")
    return text


def with_headline(readme: Path, lines: list[str]) -> str:
    """``readme``'s text with a finished plan's headline in its section."""
    from codistill.markdown import replace_section
    from codistill.study.tables import HEADLINE_KEY

    return replace_section(require_headline_section(readme), HEADLINE_KEY, lines)


def write_regime_report(args: argparse.Namespace) -> int:
    """A regime of a studies file: its tables from its committed results alone, written."""
    from codistill.study.regime_report import (
        regime_description,
        regime_lines,
        regime_title,
        resolved_regime,
    )
    from codistill.study.regimes import RegimeFiles, collect, plan

    name, regime = resolved_regime(args.plan_file, args.regime, {})
    regime_dir = (args.results or REGIME_RESULTS) / name
    files = RegimeFiles(params=args.params, prepared=args.prepared)
    scoring = Scoring(score_last=regime.get("score_last", 1))
    results, stale = collect(files, regime_dir, plan(regime, ablations=True), scoring)
    lines = regime_lines(name, regime, results, stale, Path(f"docs/quality_curves-{name}.png"))
    description = regime_description(name, regime, results, args.plan_file, regime_dir)
    out = args.out or args.workdir / f"{name}-report.md"
    heading = [f"# {regime_title(name)}", "", description, "", *made_with_of(results)]
    return publish_report(out, heading, lines)


def write_search_report(args: argparse.Namespace) -> int:
    """A search of a studies file: its table and choice from its results alone, written."""
    from codistill.markdown import markdown_table
    from codistill.study.searches import (
        SEARCH_HEADER,
        SearchFiles,
        choice_line,
        collect,
        reference_seeds,
        search_description,
        search_title,
        table_rows,
    )
    from codistill.study.settings import load_studies

    searches = load_studies(args.plan_file)["searches"]
    if args.search not in searches:
        found = ", ".join(searches)
        raise PlanError(f"{args.plan_file}: no search {args.search!r} (found: {found})")
    search = searches[args.search]
    folder = (args.results or SEARCH_RESULTS) / args.search
    files = SearchFiles(args.params, args.prepared, Path(), args.workdir, folder, REGIME_RESULTS)
    seeds = args.seeds or reference_seeds(search, folder)
    if not seeds:
        raise PlanError(f"{folder}: no results of search {args.search!r} to report")
    results, current = collect(search, seeds, files)
    lines = [
        *markdown_table(SEARCH_HEADER, table_rows(search, results, current)),
        "",
        choice_line(search, results, seeds, current),
    ]
    description = search_description(search, seeds, folder, REGIME_RESULTS)
    out = args.out or args.workdir / f"{args.search}-report.md"
    heading = [f"# {search_title(args.search)}", "", description, "", *made_with_of(results)]
    return publish_report(out, heading, lines)


def made_with_of(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The made-with lines of ``results`` (row or candidate -> its runs), each run once."""
    from codistill.study.provenance import distinct_runs, made_with_lines

    return made_with_lines(distinct_runs(results))


def migrate_results(args: argparse.Namespace) -> int:
    """Migrate each folder's results to the present identity rule; print what each held."""
    from codistill.study.migration import migrate_folder

    for folder in args.folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of results")
        counts = migrate_folder(folder, args.params, args.prepared)
        print(
            f"{folder}: {counts['migrated']} migrated, {counts['present']} already under the "
            f"present rule, {counts['stale']} stale (left as they are)"
        )
    return 0


def run_study_command(args: argparse.Namespace) -> int:
    """Dispatch one ``codistill study`` action; return the exit code."""
    if args.action == "migrate":
        return migrate_results(args)
    if args.action in ("replay", "reproduce"):
        return _replay_command(args)
    if args.action == "report" and (args.regime or args.search) and args.readme:
        raise PlanError("--readme takes a plan's headline; a regime or search has none")
    if args.action == "report" and args.regime:
        return write_regime_report(args)
    if args.action == "report" and args.search:
        return write_search_report(args)
    plan = load_plan(args.plan_file)
    action = {"plan": show_plan, "run": train_plan, "report": write_report}[args.action]
    return action(args, plan)


def _replay_command(args: argparse.Namespace) -> int:
    """``replay`` or ``reproduce``: 1, with the difference in one line, if weights differ."""
    from codistill.study.replay import ReplayError, replay_code, reproduce_run

    try:
        return {"replay": replay_code, "reproduce": reproduce_run}[args.action](args)
    except ReplayError as err:
        print(f"codistill study {args.action}: {err}", file=sys.stderr)
        return 1
