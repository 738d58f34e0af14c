"""Markdown tables of a study, and the confirmation's report."""

from __future__ import annotations

import math

from codistill.markdown import markdown_table
from codistill.study.confirmation import Confirmation, Outcome, Runs, row_mious
from codistill.study.statistics import Interval, mean_std

STUDENT_NAMES = {"cnn": "CNN (DeepLabV3+ R18)", "vit": "ViT (SegFormer-style)"}
SHORT_NAMES = {"cnn": "CNN", "vit": "ViT"}
SPLIT_NAMES = {"val": "validation", "test": "test"}
# The columns of a comparison's row: the secondary ones stop before the Holm p.
PRIMARY_HEADER = [
    "comparison",
    "student",
    "against",
    "Δ mIoU [95 % t]",
    "bootstrap 95 %",
    "p",
    "Holm p",
    "claim",
]


def _settings(overrides: dict) -> str:
    return ", ".join(f"`{key}={value}`" for key, value in overrides.items())


def _bootstrap_cell(interval: Interval) -> str:
    return f"[{interval.low:+.2f}, {interval.high:+.2f}]"


def p_cell(p_value: float) -> str:
    """A p-value to four places, ``<0.0001`` below that, ``-`` where undefined (no spread)."""
    if math.isnan(p_value):
        return "-"
    return "<0.0001" if p_value < 1e-4 else f"{p_value:.4f}"


def row_lines(confirmation: Confirmation, runs: Runs) -> list[str]:
    """Each row's mIoU (mean ± sd over the seeds) on the scored and the reported splits."""
    plan = confirmation.plan
    splits = (plan.split, *plan.reported)
    header = ["row", "setting"]
    header += [
        f"{STUDENT_NAMES[st]} {SPLIT_NAMES[split]}" for st in plan.students for split in splits
    ]
    rows = []
    for row, overrides in plan.rows.items():
        cells = [row, _settings(overrides)]
        for student in plan.students:
            for split in splits:
                mean, sd = mean_std(list(row_mious(runs, plan, row, split, student).values()))
                cells.append(f"{mean:.2f} ± {sd:.2f}")
        rows.append(cells)
    return markdown_table(header, rows)


def outcome_rows(outcomes: tuple[Outcome, ...], alpha: float, claims: bool) -> list[list[str]]:
    """One line per outcome: the difference, its intervals, p-values and, if asked, the claim."""
    rows = []
    for o in outcomes:
        cells = [o.comparison.label, STUDENT_NAMES[o.student], o.reference]
        cells += [o.interval.cell(), _bootstrap_cell(o.bootstrap), p_cell(o.p_value)]
        if claims:
            cells += [p_cell(o.adjusted_p), f"**{o.claim(alpha)}**"]
        rows.append(cells)
    return rows


def class_lines(outcomes: tuple[Outcome, ...], class_names: tuple[str, ...]) -> list[str]:
    """Per class and outcome: the IoU difference, and the mIoU difference without the class."""
    header = ["class"]
    for o in outcomes:
        name = f"{o.comparison.row} − {o.reference} ({SHORT_NAMES[o.student]})"
        header += [f"{name}: IoU", f"{name}: mIoU without it"]
    rows = []
    for name in class_names:
        cells = [name]
        for o in outcomes:
            iou = o.per_class.get(name)
            cells += [iou.cell() if iou else "not seen", o.leave_one_out[name].cell()]
        rows.append(cells)
    return markdown_table(header, rows)


def largest_gain_lines(outcomes: tuple[Outcome, ...]) -> list[str]:
    """Each outcome with the class that gains most left out of the mean."""
    rows = []
    for o in outcomes:
        name = o.largest_gain_class()
        rows.append(
            [
                f"{o.comparison.row} − {o.reference}",
                STUDENT_NAMES[o.student],
                name,
                o.per_class[name].cell(),
                o.interval.cell(),
                o.leave_one_out[name].cell(),
            ]
        )
    header = ["comparison", "student", "class gaining most", "its IoU Δ", "Δ mIoU"]
    return markdown_table([*header, "Δ mIoU without it"], rows)


def confirmation_lines(
    confirmation: Confirmation, runs: Runs, class_names: tuple[str, ...]
) -> list[str]:
    """The confirmation's report: rows, primary claims, where they come from, the rest."""
    plan = confirmation.plan
    scored = SPLIT_NAMES[plan.split]
    beside = ", ".join(SPLIT_NAMES[s] for s in plan.reported)
    seeds = ", ".join(map(str, plan.seeds))
    return [
        f"Pre-registered plan `{plan.name}`: seeds {seeds}, the {plan.checkpoint} checkpoint, "
        f"scored on {scored}; {beside} reported beside it. mIoU in points, mean ± sd over the "
        "seeds. Schedule: " + (_settings(plan.params) or "params.yaml") + ".",
        "",
        *row_lines(confirmation, runs),
        "",
        f"Primary comparisons on {scored} ({len(confirmation.primary)}, Holm-corrected "
        f"together; a claim needs a Holm p below {plan.alpha}). Δ: paired over the seeds, with "
        "its t-interval; bootstrap: resampling seeds and images together. `better of` picks, "
        f"per student, the row with the higher mean {SPLIT_NAMES[plan.reported[0]]} mIoU.",
        "",
        *markdown_table(PRIMARY_HEADER, outcome_rows(confirmation.primary, plan.alpha, True)),
        "",
        f"Where the primary differences come from ({scored}; per class: the IoU difference; "
        "and the mIoU difference with that class left out of the mean):",
        "",
        *class_lines(confirmation.primary, class_names),
        "",
        "The primary comparisons without the class that gains most:",
        "",
        *largest_gain_lines(confirmation.primary),
        "",
        "Secondary comparisons (reported, no claim; p not corrected):",
        "",
        *markdown_table(
            PRIMARY_HEADER[:6], outcome_rows(confirmation.secondary, plan.alpha, False)
        ),
    ]


HEADLINE_KEY = "confirmation-headline"  # the README section a finished plan's report writes


def claim_sentence(outcome: Outcome, alpha: float) -> str:
    """One primary comparison in words: its difference, interval, Holm p and what it supports."""
    claim = outcome.claim(alpha)
    reading = {
        "gain": f"`{outcome.comparison.row}` scores higher",
        "loss": f"`{outcome.comparison.row}` scores lower",
        "no separation": "no separation: no claim either way",
    }[claim]
    return (
        f"- {SHORT_NAMES[outcome.student]}, `{outcome.comparison.row}` − `{outcome.reference}`: "
        f"{outcome.interval.mean:+.2f} points of mIoU (95 % t-interval "
        f"[{outcome.interval.low:+.2f}, {outcome.interval.high:+.2f}], Holm p "
        f"{p_cell(outcome.adjusted_p)}): {reading}."
    )


def headline_lines(confirmation: Confirmation, runs: Runs, report: str) -> list[str]:
    """The README's headline of a finished plan: its rows, its primary claims, in words."""
    plan = confirmation.plan
    primary = confirmation.primary
    claims = [o for o in primary if o.claim(plan.alpha) != "no separation"]
    seeds = ", ".join(map(str, plan.seeds))
    if not claims:
        summary = (
            f"None of the {len(primary)} primary comparisons separates after Holm's "
            "correction: the confirmation supports no claim that one row beats another."
        )
    elif len(claims) == len(primary):
        summary = f"All {len(primary)} primary comparisons separate after Holm's correction."
    else:
        summary = (
            f"{len(claims)} of the {len(primary)} primary comparisons "
            f"{'separates' if len(claims) == 1 else 'separate'} after Holm's correction; "
            "the others support no claim."
        )
    return [
        f"Pre-registered confirmation `{plan.name}` ({len(plan.rows) * len(plan.seeds)} runs, "
        f"seeds {seeds}, the {plan.checkpoint} checkpoint): mIoU in "
        f"points on {SPLIT_NAMES[plan.split]}, "
        + ", ".join(SPLIT_NAMES[s] for s in plan.reported)
        + " beside it, mean ± sd over the seeds. Per class, bootstrap intervals and the "
        f"secondary comparisons: `{report}`.",
        "",
        *row_lines(confirmation, runs),
        "",
        *markdown_table(PRIMARY_HEADER, outcome_rows(primary, plan.alpha, True)),
        "",
        *(claim_sentence(o, plan.alpha) for o in primary),
        "",
        f"**{summary}**",
    ]
