"""A regime's tables, built from its per-run results only.

The probe, the method comparison with paired intervals, the ablation grid, the per-class
scores, the diagnostics of `ours` and the README headline, as markdown lines.
"""

from __future__ import annotations

import statistics
from typing import Any

from codistill.config import ROLES, TERM_NAMES
from codistill.distill.objective import DIRECTION_SHARES
from codistill.markdown import markdown_table
from codistill.study.results import miou_by_seed, seconds_per_step
from codistill.study.statistics import Interval, mean_std, paired_differences, paired_interval
from codistill.study.tables import STUDENT_NAMES

REFERENCE = "independent"
BASELINES = ("dml", "kdcl")
MAIN_METHODS = (REFERENCE, *BASELINES, "ours")  # the main table's rows, in order
FLAT_GAIN = 1.0  # points of validation mIoU over the last quarter of the schedule
# Why a study keeps its scored checkpoint count when another would be steadier.
REGIME_FIXES_SCORING = (
    "its regime fixed before the first run: a run scores the test split at the checkpoints it "
    "keeps, so another count takes a new regime."
)
Results = dict[str, list[dict[str, Any]]]


def miou_on_test(runs: list[dict[str, Any]], role: str) -> dict[int, float]:
    """Test mIoU in points, by seed."""
    return miou_by_seed(runs, role, "test")


def interval_on_test(
    runs: list[dict[str, Any]], reference: list[dict[str, Any]], role: str
) -> Interval | None:
    """The paired test-mIoU difference of ``runs`` to ``reference`` over their shared seeds."""
    return paired_interval(miou_on_test(runs, role), miou_on_test(reference, role))


def spread(values: dict[int, float]) -> str:
    """``mean ± sd`` of the values, or the value alone for one run."""
    mean, std = mean_std(list(values.values()))
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def best_baseline(results: Results, role: str) -> str | None:
    """The DML/KDCL row with the higher mean test mIoU over the seeds both ran (or either)."""
    ran = [b for b in BASELINES if results.get(b)]
    if not ran:
        return None
    shared = set.intersection(*(set(miou_on_test(results[b], role)) for b in ran))

    def mean(baseline: str) -> float:
        scores = miou_on_test(results[baseline], role)
        return statistics.fmean(scores[s] for s in shared or scores)

    return max(ran, key=mean)


def interval_cells(interval: Interval | None, against: str = "") -> list[str]:
    """The paired difference (its seed count, its reference) and its verdict, as two cells."""
    if interval is None:
        return ["-", ""]
    detail = f"n={interval.n}" + (f", vs {against}" if against else "")
    return [f"{interval.cell()} ({detail})", interval.verdict()]


def main_rows(results: Results, role: str, labels: list[str]) -> list[list[str]]:
    """Per row of ``labels``: runs, mean ± sd, paired differences to `independent` and the best."""
    best = best_baseline(results, role)
    reference = miou_on_test(results[REFERENCE], role)
    rows = []
    for label in labels:
        runs = results[label]
        if not runs:
            rows.append([label, "0", "not run", "-", "", "-", ""])
            continue
        own = miou_on_test(runs, role)
        cells = [label, str(len(runs)), spread(own)]
        vs_reference = None if label == REFERENCE else paired_interval(own, reference)
        cells += interval_cells(vs_reference)
        vs_best = None
        if best is not None and label not in (REFERENCE, *BASELINES):
            vs_best = interval_on_test(runs, results[best], role)
        cells += interval_cells(vs_best, best or "")
        rows.append(cells)
    return rows


def tuned_lines(results: Results, tuned: dict[str, str]) -> list[str]:
    """Each tuned row (label → its method) paired with its method's default, on the test split."""
    lines = []
    for label, method in tuned.items():
        if not results.get(label) or not results.get(method):
            continue
        cells = []
        for role in ROLES:
            interval = interval_on_test(results[label], results[method], role)
            cells.append(f"{STUDENT_NAMES[role]} {' '.join(interval_cells(interval))}")
        lines.append(f"`{label}` − `{method}` (the default), test mIoU: {'; '.join(cells)}.")
    return lines


def class_lines(results: Results, label: str, class_names: tuple[str, ...]) -> list[str]:
    """Per class and student: `independent`'s test IoU and ``label``'s paired differences."""
    if not results.get(label) or not results[REFERENCE]:
        return ["", f"No paired `{label}` and `{REFERENCE}` runs yet."]
    lines, intervals = [], 0
    for role in ROLES:
        best = best_baseline(results, role)
        references = [REFERENCE, *([best] if best else [])]
        rows = []
        for index, name in enumerate(class_names):
            own = class_scores(results[label], role, index)
            cells = [name, spread(class_scores(results[REFERENCE], role, index))]
            for reference in references:
                interval = paired_interval(own, class_scores(results[reference], role, index))
                cells.append(" ".join(interval_cells(interval)))
            rows.append(cells)
            intervals += len(references)
        header = ["class", "independent IoU (%)"]
        header += [f"{label} − {reference}" for reference in references]
        lines += ["", f"{STUDENT_NAMES[role]}:", "", *markdown_table(header, rows)]
    return [
        "",
        f"Test IoU (%) per class, mean ± sd over the seeds, and the paired differences of "
        f"`{label}` with their 95 % t-intervals. Of these {intervals} intervals about "
        f"{0.05 * intervals:.0f} would exclude 0 by chance alone: read the pattern across "
        "classes, not one cell.",
        *lines,
    ]


def class_scores(runs: list[dict[str, Any]], role: str, index: int) -> dict[int, float]:
    """Test IoU of one class (points), by seed."""
    return {r["seed"]: 100 * r["scores"]["test"][role]["per_class_iou"][index] for r in runs}


def ablation_rows(
    results: Results, labels: list[str], seeds: list[int], whole: str
) -> list[list[str]]:
    """Each ablation row on ``seeds``: both students' scores, paired to `independent` and ``whole``.

    ``whole`` is the row with every term on: pairing a row with it says what the terms that
    row leaves out are worth.
    """
    rows = []
    for label in labels:
        runs = [r for r in results[label] if r["seed"] in seeds]
        if not runs:
            rows.append([label, "0", "not run", "not run", "-", "-", "-", "-"])
            continue
        cells = [label, str(len(runs))]
        cells += [spread(miou_on_test(runs, role)) for role in ROLES]
        for reference in (REFERENCE, whole):
            for role in ROLES:
                interval = None
                if label != reference:
                    interval = interval_on_test(runs, results[reference], role)
                cells.append(" ".join(interval_cells(interval)).strip())
        rows.append(cells)
    return rows


def probe_lines(results: Results, regime: dict[str, Any]) -> list[str]:
    """`independent`'s validation mIoU per checkpoint, its late gain, and what the study costs."""
    runs = results[REFERENCE]
    if not runs:
        return ["No `independent` run yet."]
    iterations = [c["iteration"] for c in runs[0]["checkpoints"]]
    rows = []
    for index, iteration in enumerate(iterations):
        cells = [str(iteration)]
        for role in ROLES:
            values = {r["seed"]: 100 * r["checkpoints"][index]["val"][role]["miou"] for r in runs}
            cells.append(spread(values))
        rows.append(cells)
    late = max((i for i, it in enumerate(iterations) if it <= 0.75 * iterations[-1]), default=0)
    gains = {role: statistics.fmean(_gain(r, late, role) for r in runs) for role in ROLES}
    timed_on = runs[0]["machine"].get("cpu")
    timing = {
        label: statistics.median(seconds)
        for label in MAIN_METHODS
        if (seconds := [s for r in results.get(label, []) if (s := seconds_per_step(r, timed_on))])
    }
    models = {r["machine"].get("cpu") for label in MAIN_METHODS for r in results.get(label, [])}
    flat = all(gain < FLAT_GAIN for gain in gains.values())
    return [
        f"`independent`, validation mIoU (%), mean ± sd over {len(runs)} seed(s):",
        "",
        *markdown_table(["iteration", *(f"{r} val mIoU (%)" for r in ROLES)], rows),
        "",
        f"Gain from iteration {iterations[late]} to {iterations[-1]} (the last "
        f"{1 - iterations[late] / iterations[-1]:.0%} of the schedule): "
        + ", ".join(f"{role} {gain:+.2f} points" for role, gain in gains.items())
        + (
            f": flat (under {FLAT_GAIN:g} point)."
            if flat
            else f": not flat (a gain of {FLAT_GAIN:g} point or more)."
        ),
        "",
        "Seconds per training step, median over uninterrupted runs"
        + (f" on {timed_on} (of {len(models)} CPU models)" if len(models) > 1 else "")
        + ": "
        + (", ".join(f"{label} {s:.2f} s" for label, s in timing.items()) or "-")
        + ".",
        *budget_lines(runs[0], timing, len(regime["seeds"]), regime.get("budget_hours"), flat),
    ]


def budget_lines(
    run: dict[str, Any],
    timing: dict[str, float],
    seeds: int,
    budget_hours: float | None,
    flat: bool,
) -> list[str]:
    """The main table's training hours at the measured step times, against the study's budget.

    A method not yet timed counts at `independent`'s step time, and the line says so.
    """
    if REFERENCE not in timing:
        return []
    untimed = [label for label in MAIN_METHODS if label not in timing]
    per_round = sum(timing.get(label, timing[REFERENCE]) for label in MAIN_METHODS)
    machine = run["machine"]
    at_once = max(1, machine["cores"] // machine["torch_threads"])
    hours = seeds * run["iterations"] * per_round / at_once / 3600
    assumed = (
        f"; {', '.join(untimed)} not yet timed, counted at `independent`'s step time"
        if untimed
        else ""
    )
    line = (
        f"At these step times the main table ({len(MAIN_METHODS)} methods × {seeds} seeds × "
        f"{run['iterations']} iterations, {at_once} run(s) at a time on {machine['cores']} "
        f"cores{assumed}) takes about {hours:.1f} hours of training on the runs' CPU "
        f"({machine['cpu']})"
    )
    if budget_hours is None:
        return ["", line + "."]
    if hours <= budget_hours:
        longest = int(run["iterations"] * budget_hours / hours)
        room = (
            ""
            if flat
            else f" The curve is not flat, and the budget would hold about {longest} iterations."
        )
        return ["", line + f", within the study's budget of {budget_hours:g} hours.{room}"]
    verdict = (
        "so a longer schedule, which the curve would need to flatten, does not fit: the "
        "study runs at this length and its curve is not flat."
        if not flat
        else "so the study runs over its budget."
    )
    return ["", line + f", beyond the study's budget of {budget_hours:g} hours, {verdict}"]


def checkpoint_choice_lines(results: Results, score_last: int, deepest: int = 3) -> list[str]:
    """How steady each method's gap to `independent` is when scored by its last k checkpoints.

    The gap is in validation mIoU; its spread is the standard deviation over the seeds of the
    paired difference, the noise that the study's t-intervals pay for.
    """
    reference = results[REFERENCE]
    labels = [label for label in (*BASELINES, "ours") if results.get(label)]
    counts = range(1, deepest + 1)
    rows, spreads = [], {k: [] for k in counts}
    for role in ROLES:
        for label in labels:
            cells = [STUDENT_NAMES[role], label]
            for k in counts:
                differences = paired_differences(
                    validation_by_seed(results[label], role, k),
                    validation_by_seed(reference, role, k),
                )
                if len(differences) < 2:
                    cells.append("-")
                    continue
                mean, sd = mean_std(differences)
                spreads[k].append(sd)
                cells.append(f"{mean:+.2f} (sd {sd:.2f})")
            rows.append(cells)
    if not all(spreads.values()):
        return []
    means = {k: statistics.fmean(values) for k, values in spreads.items()}
    steadiest = min(means, key=means.__getitem__)
    return [
        "Which checkpoints to score: each method's paired difference to `independent` in "
        "validation mIoU (points), with the standard deviation of that difference over the "
        "seeds, when a run is scored by the mean of its last 1, 2 or 3 checkpoints.",
        "",
        *markdown_table(
            ["student", "method", *(f"last {k}" for k in counts)],
            [*rows, ["mean sd", "", *(f"{means[k]:.2f}" for k in counts)]],
        ),
        "",
        f"The steadiest is the last {steadiest}; the study scores the last {score_last}"
        + ("." if steadiest == score_last else f", as {REGIME_FIXES_SCORING}"),
    ]


def validation_by_seed(runs: list[dict[str, Any]], role: str, last: int) -> dict[int, float]:
    """Each run's validation mIoU of ``role`` (points), averaged over its last checkpoints."""
    return {
        r["seed"]: 100 * statistics.fmean(c["val"][role]["miou"] for c in r["checkpoints"][-last:])
        for r in runs
    }


def _gain(result: dict[str, Any], start: int, role: str) -> float:
    checkpoints = result["checkpoints"]
    return 100 * (checkpoints[-1]["val"][role]["miou"] - checkpoints[start]["val"][role]["miou"])


def diagnostics_lines(runs: list[dict[str, Any]]) -> list[str]:
    """`ours` per checkpoint window: which way BSD sent knowledge, each term over supervision."""
    if not runs:
        return ["No `ours` run yet."]
    terms = [t for t in TERM_NAMES if t in runs[0]["terms"]]
    header = [
        "iterations",
        "region-BSD windows: CNN teaches",
        "ViT teaches",
        "pixel-BSD pixels: CNN teaches",
        "ViT teaches",
        *(f"{t} / sup" for t in terms),
    ]
    rows, start = [], 0
    for checkpoint in runs[0]["checkpoints"]:
        end = checkpoint["iteration"]
        windows = [w for r in runs if (w := window_means(r["curves"], start, end))]
        cells = [f"{start + 1}-{end}"]
        if windows:
            cells += [
                f"{100 * statistics.fmean(w[key] for w in windows):.1f} %"
                for key in DIRECTION_SHARES
            ]
            for term in terms:
                ratios = [w[f"loss_{term}"] / max(w["loss_sup"], 1e-12) for w in windows]
                cells.append(f"{statistics.fmean(ratios):.3f}")
        else:
            cells += ["-"] * (len(header) - 1)
        rows.append(cells)
        start = end
    return [
        f"`ours`, mean over {len(runs)} seed(s). Shares: of the scored windows (region-BSD) and "
        "of the labelled pixels (pixel-BSD) where each student taught the other; the rest "
        "taught neither way. Ratios: each term's unweighted loss over the supervised loss "
        "(both students' CE). Each from the training steps logged in the window.",
        "",
        *markdown_table(header, rows),
    ]


def quarter_means(runs: list[dict[str, Any]], last: bool) -> dict[str, float]:
    """Each logged value over the first or last quarter of the schedule, mean over runs.

    A run logged too rarely to have a row in that quarter counts with its first (or last) row.
    """
    windows = []
    for run in runs:
        iterations, curves = run["iterations"], run["curves"]
        start, end = (iterations * 3 // 4, iterations) if last else (0, iterations // 4)
        nearest = curves[-1:] if last else curves[:1]
        rows = [row for row in curves if start < row["iteration"] <= end] or nearest
        if rows:
            windows.append({key: statistics.fmean(row[key] for row in rows) for key in rows[0]})
    return {key: statistics.fmean(w[key] for w in windows) for key in windows[0]} if windows else {}


def diagnostics_summary(runs: list[dict[str, Any]]) -> list[str]:
    """The README's reading of `ours`' diagnostics: which way BSD taught, what each term weighs."""
    if not runs:
        return ["No `ours` run yet: nothing to read from its diagnostics."]
    early, late = quarter_means(runs, last=False), quarter_means(runs, last=True)
    terms = [t for t in TERM_NAMES if t in runs[0]["terms"]]

    def shift(key: str) -> str:
        return f"{100 * early[key]:.0f} % → {100 * late[key]:.0f} %"

    ratios = {t: late[f"loss_{t}"] / max(late["loss_sup"], 1e-12) for t in terms}
    weights = runs[0]["config"]["distill"]["weights"]
    weighted = {t: weights[t] * r for t, r in ratios.items()}
    weigh = ", ".join(f"{t} {ratios[t]:.2f} (×{weights[t]:g} = {weighted[t]:.2f})" for t in terms)
    below = "every one below 1" if max(weighted.values()) < 1 else "not all below 1"
    return [
        f"What the diagnostics of `ours` show (mean over {len(runs)} seed(s), first → last "
        "quarter of the schedule; per-window figures in [docs/results.md](docs/results.md)). "
        f"Region-BSD: the CNN taught in {shift('rbsd_cnn_teaches')} of the scored windows, the "
        f"ViT in {shift('rbsd_vit_teaches')}. Pixel-BSD: the CNN taught at "
        f"{shift('pbsd_cnn_teaches')} of the labelled pixels, the ViT at "
        f"{shift('pbsd_vit_teaches')}; at the rest nothing flowed (mostly pixels both students "
        f"got wrong). Each term's unweighted loss over the supervised loss, last quarter, "
        f"and times its weight, its pull in the total: {weigh} ({below}).",
    ]


def window_means(curves: list[dict[str, float]], start: int, end: int) -> dict[str, float]:
    """Means of the logged rows with ``start < iteration <= end`` (empty if there are none)."""
    rows = [row for row in curves if start < row["iteration"] <= end]
    return {key: statistics.fmean(row[key] for row in rows) for key in rows[0]} if rows else {}


def headline(results: Results, description: str, labels: list[str]) -> list[str]:
    """The README's table: each method row's mean ± sd and its paired verdict vs `independent`."""
    rows = []
    for label in labels:
        cells = [label]
        for role in ROLES:
            runs = results[label]
            if not runs:
                cells.append("not run")
                continue
            own = miou_on_test(runs, role)
            cell = spread(own)
            interval = interval_on_test(runs, results[REFERENCE], role)
            if label != REFERENCE and interval is not None:
                cell += f" ({interval.mean:+.2f}, {interval.verdict()})"
            cells.append(cell)
        rows.append(cells)
    runs = ", ".join(f"{label} {len(results[label])}" for label in labels)
    return [
        f"{description} Test mIoU (%), mean ± sd over seeds (runs: {runs}); in brackets the "
        "mean paired difference to `independent` over the seeds both ran, and whether its "
        "95 % t-interval excludes 0. Full tables: [docs/results.md](docs/results.md).",
        "",
        *markdown_table(["method", *(STUDENT_NAMES[r] for r in ROLES)], rows),
    ]
