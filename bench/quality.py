"""CamVid quality study: does co-distillation beat training alone, DML and KDCL.

Each regime of ``bench/studies.yaml`` fixes a schedule (iterations, batch, geometry) and the
seeds. A seed fixes both students' initial weights and the batch stream, the same for every
method, so methods are compared seed by seed: the tables give each method's mean and spread,
and its mean paired difference to ``independent`` and to the better of DML/KDCL with a 95 %
t-interval. A row claims a gain only where that interval excludes 0.

Every finished run is a JSON file under ``bench/results/quality/<regime>/`` (scores, curves,
config, commit, code digest, machine). Runs with a result from the current weight-shaping
code are not trained again; results from other code are not counted, and are listed as
stale until re-run. The tables are rewritten from the files alone (``--no-train``).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codistill.config import ROLES
from codistill.data.gate import require_validated
from codistill.distill.objective import DIRECTION_SHARES, TERM_ORDER
from environment import markdown_table, new_figure, publish_table, save_figure, write_section
from paired import Interval, mean_std, paired_interval
from study import (
    RunSpec,
    Scoring,
    is_current,
    load_studies,
    parse_overrides,
    read_result,
    run,
)

STUDENT_NAMES = {"cnn": "CNN (DeepLabV3+ R18)", "vit": "ViT (SegFormer-style)"}


@dataclass(frozen=True)
class Variant:
    """One row of a table: a method and the distillation terms forced on or off."""

    label: str
    slug: str
    method: str
    switches: dict[str, bool] = field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """The ``params.yaml`` keys this row sets."""
        return {"train.method": self.method, **{f"train.{k}": v for k, v in self.switches.items()}}


MAIN = (
    Variant("independent", "independent", "independent"),
    Variant("dml", "dml", "dml"),
    Variant("kdcl", "kdcl", "kdcl"),
    Variant("ours", "ours", "ours"),
)
BASELINES = ("dml", "kdcl")
OURS = MAIN[-1]
ABLATIONS = (
    Variant("HFD only", "hfd-only", "ours", {"hfd": True, "rbsd": False, "pbsd": False}),
    Variant("region-BSD only", "rbsd-only", "ours", {"hfd": False, "rbsd": True, "pbsd": False}),
    Variant("pixel-BSD only", "pbsd-only", "ours", {"hfd": False, "rbsd": False, "pbsd": True}),
    Variant("BSD (region + pixel)", "bsd", "ours", {"hfd": False, "rbsd": True, "pbsd": True}),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--regime", help="a regime under `regimes:` (default: the first)")
    parser.add_argument("--studies", type=Path, default=Path("bench/studies.yaml"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/quality"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/quality"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--curves-png", type=Path, default=Path("docs/quality_curves.png"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="tables only")
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument(
        "--max-runs", type=int, help="train at most this many runs, then write the tables"
    )
    parser.add_argument("--only", nargs="+", metavar="KEY", help="train only these runs")
    parser.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="train only every N-th run of the plan, from the K-th (N processes side by side)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        help="override the regime's iterations (results go to <regime>-<N>it, checkpoints "
        "at every sixth of the schedule)",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-tables", dest="tables", action="store_false")
    return parser.parse_args()


def resolved_regime(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The regime's name and entry, with ``--iterations`` and ``--set`` applied."""
    regimes = load_studies(args.studies)["regimes"]
    name = args.regime or next(iter(regimes))
    if name not in regimes:
        raise SystemExit(f"{args.studies}: no regime {name!r} (found: {', '.join(regimes)})")
    regime = dict(regimes[name])
    params = {**regime.get("params", {}), **parse_overrides(args.set)}
    if args.iterations:
        name = f"{name}-{args.iterations}it"
        params["train.iterations"] = args.iterations
        params["train.checkpoint_every"] = max(1, args.iterations // 6)
    return name, {**regime, "params": params}


def plan(regime: dict[str, Any], ablations: bool) -> list[tuple[Variant, RunSpec]]:
    """Every run of the regime, seed by seed so that paired sets complete early."""
    runs = []
    for seed in regime["seeds"]:
        for variant in MAIN:
            runs.append((variant, spec(variant, seed, regime)))
    if ablations:
        for seed in regime["ablation_seeds"]:
            for variant in ABLATIONS:
                runs.append((variant, spec(variant, seed, regime)))
    return runs


def spec(variant: Variant, seed: int, regime: dict[str, Any]) -> RunSpec:
    """The run of ``variant`` at ``seed`` under the regime's overrides."""
    return RunSpec(
        f"{variant.slug}-seed{seed}",
        variant.label,
        seed,
        {**regime.get("params", {}), **variant.overrides()},
    )


def test_miou(runs: list[dict[str, Any]], role: str, split: str = "test") -> dict[int, float]:
    """MIoU in points, by seed."""
    return {r["seed"]: 100 * r["scores"][split][role]["miou"] for r in runs}


def best_baseline(results: dict[str, list[dict]], role: str) -> str | None:
    """The DML/KDCL row with the higher mean test mIoU for ``role`` (None if neither ran)."""
    means = {
        b: statistics.fmean(test_miou(results[b], role).values())
        for b in BASELINES
        if results.get(b)
    }
    return max(means, key=means.get) if means else None


def interval_cells(interval: Interval | None) -> list[str]:
    """The paired difference and its verdict as two table cells."""
    if interval is None:
        return ["-", ""]
    return [interval.cell(), interval.verdict() if interval.n >= 2 else "too few seeds"]


def main_rows(results: dict[str, list[dict]], role: str) -> list[list[str]]:
    """One row per method: runs, mean ± sd, and paired differences to the references."""
    best = best_baseline(results, role)
    rows = []
    reference = test_miou(results["independent"], role)
    for variant in MAIN:
        runs = results[variant.label]
        if not runs:
            rows.append([variant.label, "0", "not run", "-", "", "-", ""])
            continue
        mean, std = mean_std(list(test_miou(runs, role).values()))
        cells = [variant.label, str(len(runs)), f"{mean:.2f} ± {std:.2f}"]
        own = test_miou(runs, role)
        vs_independent = None if variant.label == "independent" else paired_interval(own, reference)
        cells += interval_cells(vs_independent)
        vs_best = None
        if best is not None and variant.label not in (*BASELINES, "independent"):
            vs_best = paired_interval(own, test_miou(results[best], role))
        cells += interval_cells(vs_best)
        rows.append(cells)
    return rows


def ablation_rows(results: dict[str, list[dict]], seeds: list[int]) -> list[list[str]]:
    """Ablation rows and `all` on the ablation seeds, with paired differences to `independent`."""
    rows = []
    for variant in (*ABLATIONS, OURS):
        runs = [r for r in results[variant.label] if r["seed"] in seeds]
        label = "all (= ours)" if variant is OURS else variant.label
        if not runs:
            rows.append([label, "0", "not run", "not run", "-", "-"])
            continue
        cells = [label, str(len(runs))]
        for role in ROLES:
            mean, std = mean_std(list(test_miou(runs, role).values()))
            cells.append(f"{mean:.2f} ± {std:.2f}")
        for role in ROLES:
            reference = test_miou(results["independent"], role)
            interval = paired_interval(test_miou(runs, role), reference)
            cells.append("-" if interval is None else f"{interval.cell()} {interval.verdict()}")
        rows.append(cells)
    return rows


def probe_lines(results: dict[str, list[dict]]) -> list[str]:
    """Validation mIoU of `independent` per checkpoint, last-quarter gain, and seconds/step."""
    runs = results["independent"]
    if not runs:
        return ["No `independent` run yet."]
    iterations = [c["iteration"] for c in runs[0]["checkpoints"]]
    header = ["iteration", *(f"{r} val mIoU (%)" for r in ROLES)]
    rows = []
    for index, iteration in enumerate(iterations):
        cells = [str(iteration)]
        for role in ROLES:
            values = [100 * r["checkpoints"][index]["val"][role]["miou"] for r in runs]
            mean, std = mean_std(values)
            cells.append(f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}")
        rows.append(cells)
    total = iterations[-1]
    quarter = [i for i, it in enumerate(iterations) if it <= 0.75 * total]
    gains = []
    if quarter:
        start = quarter[-1]
        for role in ROLES:
            gain = statistics.fmean(
                100
                * (
                    r["checkpoints"][-1]["val"][role]["miou"]
                    - r["checkpoints"][start]["val"][role]["miou"]
                )
                for r in runs
            )
            gains.append(f"{role} {gain:+.2f} points")
    lines = [
        f"`independent`, mean over {len(runs)} seed(s), validation split:",
        "",
        *markdown_table(header, rows),
        "",
        f"Gain over the last quarter (iteration {iterations[quarter[-1]] if quarter else '-'} "
        f"to {total}): {', '.join(gains) or '-'}.",
        "",
        "Seconds per training step (median over the regime's runs; a run resumed mid-way is "
        "left out): "
        + ", ".join(
            f"{v.label} {statistics.median(seconds):.2f} s"
            for v in MAIN
            if (seconds := [_seconds_per_step(r) for r in results[v.label] if _uninterrupted(r)])
        )
        + ".",
    ]
    return lines


def _uninterrupted(result: dict[str, Any]) -> bool:
    return result["iterations_this_run"] == result["iterations"]


def _seconds_per_step(result: dict[str, Any]) -> float:
    return result["train_seconds_this_run"] / max(result["iterations_this_run"], 1)


def diagnostics_lines(runs: list[dict[str, Any]]) -> list[str]:
    """`ours` per checkpoint window: which way BSD sent knowledge, each term over supervision."""
    if not runs:
        return ["No `ours` run yet."]
    iterations = [c["iteration"] for c in runs[0]["checkpoints"]]
    terms = [t for t in TERM_ORDER if t in runs[0]["terms"]]
    header = [
        "iterations",
        "region-BSD windows: CNN teaches",
        "ViT teaches",
        "pixel-BSD pixels: CNN teaches",
        "ViT teaches",
        *(f"{t} / sup" for t in terms),
    ]
    rows = []
    start = 0
    for end in iterations:
        windows = [_window_means(r["curves"], start, end) for r in runs]
        cells = [f"{start + 1}-{end}"]
        for key in DIRECTION_SHARES:
            cells.append(f"{100 * statistics.fmean(w[key] for w in windows):.1f} %")
        for term in terms:
            ratio = statistics.fmean(w[f"loss_{term}"] / max(w["loss_sup"], 1e-12) for w in windows)
            cells.append(f"{ratio:.3f}")
        rows.append(cells)
        start = end
    return [
        f"`ours`, mean over {len(runs)} seed(s). Shares: of the scored windows (region-BSD) "
        "and of the labelled pixels (pixel-BSD) where each student taught the other; the "
        "rest taught neither way. Ratios: each term's unweighted loss over the supervised "
        "loss (both students' CE), averaged over the logged steps of the window.",
        "",
        *markdown_table(header, rows),
    ]


def _window_means(curves: list[dict[str, float]], start: int, end: int) -> dict[str, float]:
    rows = [row for row in curves if start < row["iteration"] <= end] or curves[-1:]
    return {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}


def plot_curves(results: dict[str, list[dict]], path: Path) -> None:
    """Validation mIoU against iterations, mean over seeds, one panel per student."""
    figure, axes = new_figure(1, 2, figsize=(10, 4), sharey=True)
    for axis, role in zip(axes, ROLES, strict=True):
        for variant in MAIN:
            runs = results[variant.label]
            if not runs:
                continue
            points = zip(*(r["checkpoints"] for r in runs), strict=True)
            xs, ys = [], []
            for entries in points:
                xs.append(entries[0]["iteration"])
                ys.append(statistics.fmean(100 * e["val"][role]["miou"] for e in entries))
            axis.plot(xs, ys, marker="o", label=f"{variant.label} ({len(runs)} seeds)")
        axis.set_title(STUDENT_NAMES[role])
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation mIoU (%)")
    axes[0].legend()
    save_figure(figure, path)


def collect(
    regime_dir: Path, runs: list[tuple[Variant, RunSpec]]
) -> tuple[dict[str, list[dict]], list[str]]:
    """Current results by row label, and the keys of stale results (other code)."""
    results: dict[str, list[dict]] = {v.label: [] for v in (*MAIN, *ABLATIONS)}
    stale = []
    for variant, run_spec in runs:
        result = read_result(regime_dir / f"{run_spec.key}.json")
        if is_current(result):
            results[variant.label].append(result)
        elif result is not None:
            stale.append(run_spec.key)
    return results, stale


HEADER = [
    "method",
    "runs",
    "test mIoU (%)",
    "vs independent: paired diff [95 % CI]",
    "",
    "vs best of DML/KDCL",
    "",
]


def headline(results: dict[str, list[dict]], regime_name: str, regime: dict) -> list[str]:
    """The README's results table: each method's mean ± sd and its verdict vs independent."""
    rows = []
    for variant in MAIN:
        cells = [variant.label]
        for role in ROLES:
            runs = results[variant.label]
            if not runs:
                cells.append("not run")
                continue
            mean, std = mean_std(list(test_miou(runs, role).values()))
            cell = f"{mean:.2f} ± {std:.2f}"
            if variant.label != "independent":
                interval = paired_interval(
                    test_miou(runs, role), test_miou(results["independent"], role)
                )
                if interval is not None and interval.n >= 2:
                    cell += f" ({interval.mean:+.2f}, {interval.verdict()})"
            cells.append(cell)
        rows.append(cells)
    counts = {v.label: len(results[v.label]) for v in MAIN}
    return [
        f"Regime `{regime_name}`: {' '.join(regime['description'].split())} Test mIoU (%), "
        f"mean ± sd over paired seeds (runs: {', '.join(f'{k} {n}' for k, n in counts.items())}); "
        "in brackets the mean paired difference to `independent` and whether its 95 % "
        "t-interval excludes 0. Full tables: [docs/results.md](docs/results.md).",
        "",
        *markdown_table(["method", *(STUDENT_NAMES[r] for r in ROLES)], rows),
    ]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name, regime = resolved_regime(args)
    regime_dir = args.results / name
    runs = plan(regime, args.ablations)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scoring = Scoring(score_last=regime.get("score_last", 1), splits=("val", "test"))
    if args.train:
        require_validated(args.prepared, args.validation)
        trained = 0
        shard, shards = (int(part) for part in args.shard.split("/"))
        for index, (_, run_spec) in enumerate(runs):
            if args.max_runs is not None and trained >= args.max_runs:
                break
            if index % shards != shard or (args.only and run_spec.key not in args.only):
                continue
            if is_current(read_result(regime_dir / f"{run_spec.key}.json")):
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
            trained += 1
    if args.tables:
        results, stale = collect(regime_dir, runs)
        write_tables(args, name, regime, results, stale)


def write_tables(
    args: argparse.Namespace,
    name: str,
    regime: dict[str, Any],
    results: dict[str, list[dict]],
    stale: list[str],
) -> None:
    """docs/results.md's study section, the curves chart and the README's headline."""
    lines = [
        "### Probe: `independent` against iterations",
        "",
        *probe_lines(results),
    ]
    for role in ROLES:
        lines += [
            "",
            f"### {STUDENT_NAMES[role]}: test mIoU",
            "",
            *markdown_table(HEADER, main_rows(results, role)),
        ]
    lines += [
        "",
        f"### Ablation: which terms (seeds {regime['ablation_seeds']})",
        "",
        *markdown_table(
            [
                "terms",
                "runs",
                "CNN test mIoU (%)",
                "ViT test mIoU (%)",
                "CNN vs independent",
                "ViT vs independent",
            ],
            ablation_rows(results, regime["ablation_seeds"]),
        ),
        "",
        "### Diagnostics of `ours`",
        "",
        *diagnostics_lines(results[OURS.label]),
        "",
        f"Learning curves (validation, mean over seeds): `{args.curves_png}`.",
    ]
    if stale:
        lines += [
            "",
            f"Not counted: {len(stale)} result(s) from other weight-shaping code "
            f"({', '.join(stale)}); `python bench/quality.py --regime {name}` re-runs them.",
        ]
    if any(results[v.label] for v in MAIN):
        plot_curves(results, args.curves_png)
    description = (
        f"Regime `{name}` of `{args.studies}`: {' '.join(regime['description'].split())} "
        f"Seeds {regime['seeds']} (ablations {regime['ablation_seeds']}); each seed fixes both "
        "students' initial weights and the batch stream for every method. Score: test split "
        "(233 images), logits at the native 360x480, mean over the last "
        f"{regime.get('score_last', 1)} checkpoint(s). A difference counts only where its "
        "95 % t-interval over the paired seeds excludes 0; otherwise: no separation. "
        f"Per-run results: `{args.results / name}`."
    )
    publish_table(
        args.out,
        "CamVid: co-distillation against the baselines",
        description,
        ("torch", "timm"),
        [],
        [],
        lines,
        key=f"quality-{name}",
    )
    write_section(args.readme, "quality-headline", headline(results, name, regime))


if __name__ == "__main__":
    main()
