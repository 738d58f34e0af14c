"""A regime of the studies file, resolved and written up: its plan and the text of its tables.

``bench/quality.py`` trains a regime and puts this text into ``docs/results.md``;
``codistill study report STUDIES --regime NAME`` writes the same text from the committed
results alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codistill.data.base import dataset_spec
from codistill.markdown import markdown_table
from codistill.study.plan import PlanError
from codistill.study.regime_tables import (
    STUDENT_NAMES,
    Results,
    ablation_rows,
    checkpoint_choice_lines,
    class_lines,
    diagnostics_lines,
    main_rows,
    probe_lines,
    tuned_lines,
)
from codistill.study.regimes import ABLATIONS, MAIN, tuned_variants
from codistill.study.settings import load_studies

ALL_TERMS = "all (= ours)"


def resolved_regime(
    studies: Path,
    name: str | None,
    overrides: dict[str, Any],
    iterations: int | None = None,
    seeds: list[int] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The regime's name and entry, with ``overrides``, ``iterations`` and ``seeds`` applied.

    ``name`` defaults to the first regime. Only that regime, unchanged, writes the README's
    headline (``headline``). ``overrides`` change the configuration, and so the runs'
    identity: their results count only where the same overrides are asked for. Other
    ``iterations`` make another regime, ``<name>-<N>it``, checkpointed every sixth.
    """
    found = load_studies(studies)
    regimes = found["regimes"]
    chosen = name or next(iter(regimes), None)
    if chosen not in regimes:
        raise PlanError(f"{studies}: no regime {chosen!r} (found: {', '.join(regimes)})")
    regime = dict(regimes[chosen])
    params = {**regime.get("params", {}), **overrides}
    label = chosen
    if iterations:
        label = f"{chosen}-{iterations}it"
        params["train.iterations"] = iterations
        params["train.checkpoint_every"] = max(1, iterations // 6)
    regime["methods"] = (*MAIN, *tuned_variants(regime, params, found["searches"]))
    if seeds:
        regime["seeds"] = seeds
    variant = bool(iterations or overrides or seeds)
    regime["headline"] = chosen == next(iter(regimes)) and not variant
    return label, {**regime, "params": params}


def class_names(results: Results) -> tuple[str, ...]:
    """The class names of the dataset the study's runs were trained on."""
    run = next((r for runs in results.values() for r in runs), None)
    return dataset_spec(run["config"]["data"]["dataset"]).class_names if run else ()


def _main_table(results: Results, role: str, methods: list[str]) -> list[str]:
    header = [
        "method",
        "runs",
        "test mIoU (%)",
        "vs independent: paired diff [95 % CI]",
        "",
        "vs the better of DML/KDCL",
        "",
    ]
    return [
        "",
        f"### {STUDENT_NAMES[role]}: test mIoU",
        "",
        *markdown_table(header, main_rows(results, role, methods)),
    ]


def _ablation_table(results: Results, seeds: list[int]) -> list[str]:
    labels = [v.label for v in ABLATIONS] + [ALL_TERMS]
    header = [
        "terms",
        "runs",
        "CNN test mIoU (%)",
        "ViT test mIoU (%)",
        "CNN vs independent",
        "ViT vs independent",
        f"CNN vs {ALL_TERMS}",
        f"ViT vs {ALL_TERMS}",
    ]
    return [
        "",
        f"### Ablation: which terms (seeds {seeds})",
        "",
        *markdown_table(header, ablation_rows(results, labels, seeds, ALL_TERMS)),
    ]


def regime_lines(
    name: str, regime: dict[str, Any], results: Results, stale: list[str], curves_png: Path
) -> list[str]:
    """The regime's tables: probe, checkpoint choice, main rows, ablations, classes, diagnostics.

    ``results`` gains the ``all (= ours)`` row the ablation table pairs with.
    """
    results[ALL_TERMS] = results["ours"]
    methods = [v.label for v in regime["methods"]]
    lines = ["### Probe: `independent` against iterations", "", *probe_lines(results, regime)]
    choice = checkpoint_choice_lines(results, regime.get("score_last", 1))
    lines += ["", *choice] if choice else []
    for role in STUDENT_NAMES:
        lines += _main_table(results, role, methods)
    against_default = tuned_lines(
        results, {v.label: v.method for v in regime["methods"] if v.search}
    )
    lines += ["", *against_default] if against_default else []
    lines += [
        *_ablation_table(results, regime["ablation_seeds"]),
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
    return lines


def regime_description(
    name: str, regime: dict[str, Any], results: Results, studies: Path, results_dir: Path
) -> str:
    """What the regime is, how its rows were made, and how it is scored."""
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
    return (
        f"Regime `{name}` of `{studies}`: {summary}{tuned}{copied} Seeds {regime['seeds']} "
        f"(ablations {regime['ablation_seeds']}); each seed fixes both students' initial "
        "weights and the batch stream for every method. Score: test split, logits at the "
        f"native size, mean over the last {regime.get('score_last', 1)} checkpoint(s). A "
        "difference counts only where its 95 % t-interval over the paired seeds excludes 0; "
        f"otherwise: no separation. Per-run results: `{results_dir}`."
    )


def regime_title(name: str) -> str:
    """The heading of the regime's section."""
    return f"CamVid: co-distillation against the baselines (regime `{name}`)"
