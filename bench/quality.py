"""CamVid comparison of the co-distillation methods, several seeds each, at one fixed budget.

Every run trains both students from scratch with the same schedule (iterations, batch, crop)
and scores them on the test split at native resolution. Runs live in their own folders
under ``--workdir``; a killed benchmark resumes: finished runs are read back, an unfinished
one continues from its last checkpoint. For the learning curves, the students of the first
seed are also kept at every checkpoint and scored on the validation split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from codistill.artifacts import write_json_atomic
from codistill.config import ROLES, Params, load_params
from codistill.data.gate import require_validated
from codistill.engine.checkpoint import load_checkpoint, save_checkpoint
from codistill.engine.trainer import LAST, CoTrainer
from codistill.evaluation.evaluate import evaluate_students
from codistill.evaluation.stage import load_students
from codistill.models import build_student
from environment import (
    bench_parser,
    markdown_table,
    new_figure,
    num_classes,
    publish_table,
    save_figure,
)

RESULT = "result.json"
SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class Variant:
    """One row of a table: a method and the distillation terms forced on or off."""

    label: str
    method: str
    switches: dict[str, bool] = field(default_factory=dict)


MAIN = (
    Variant("independent", "independent"),
    Variant("dml", "dml"),
    Variant("kdcl", "kdcl"),
    Variant("ours", "ours"),
)
ABLATIONS = (
    Variant("HFD only", "ours", {"hfd": True, "rbsd": False, "pbsd": False}),
    Variant("region-BSD only", "ours", {"hfd": False, "rbsd": True, "pbsd": False}),
    Variant("pixel-BSD only", "ours", {"hfd": False, "rbsd": False, "pbsd": True}),
    Variant("BSD (region + pixel)", "ours", {"hfd": False, "rbsd": True, "pbsd": True}),
    Variant("all (= ours)", "ours"),
)


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--validation", type=Path, default=Path("build/validate"))
    parser.add_argument("--workdir", type=Path, default=Path("build/bench/quality"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, nargs=2, default=(160, 224))
    parser.add_argument("--checkpoint-every", type=int, default=40)
    parser.add_argument("--workers", type=int, help="data loader workers (default: params)")
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--curves-png", type=Path, default=Path("docs/quality_curves.png"))
    return parser.parse_args()


def run_params(base: Params, variant: Variant, seed: int, args: argparse.Namespace) -> Params:
    """``base`` with the variant's method and switches, the seed and the shared budget."""
    train = replace(
        base.train,
        method=variant.method,
        seed=seed,
        iterations=args.iterations,
        batch_size=args.batch,
        crop=tuple(args.crop),
        checkpoint_every=args.checkpoint_every,
        log_every=min(base.train.log_every, args.checkpoint_every),
        num_workers=base.train.num_workers if args.workers is None else args.workers,
        **{term: variant.switches.get(term) for term in ("hfd", "rbsd", "pbsd")},
    )
    return replace(base, train=train, tracking=replace(base.tracking, enabled=False))


def run_folder(workdir: Path, variant: Variant, seed: int) -> Path:
    """Where one run keeps its checkpoint, students, snapshots and result."""
    switches = "-".join(f"{k}{int(v)}" for k, v in sorted(variant.switches.items()))
    return workdir / f"{variant.method}{'-' + switches if switches else ''}-seed{seed}"


class SnapshotTrainer(CoTrainer):
    """A trainer that also keeps both students' weights at every checkpoint."""

    def _checkpoint(self) -> None:
        super()._checkpoint()
        folder = self.out_dir / SNAPSHOTS / str(self.iteration)
        for role in ROLES:
            save_checkpoint(folder / f"{role}.pt", getattr(self.model, role).state_dict())


def curve(params: Params, folder: Path, prepared: Path) -> list[dict[str, float]]:
    """Validation mIoU of both students at every kept snapshot."""
    points = []
    snapshots = sorted((folder / SNAPSHOTS).iterdir(), key=lambda p: int(p.name))
    for snapshot in snapshots:
        models = {}
        for role, cfg in zip(ROLES, (params.models.cnn, params.models.vit), strict=True):
            models[role] = build_student(cfg, num_classes(params))
            models[role].load_state_dict(load_checkpoint(snapshot / f"{role}.pt"))
        scores, _ = evaluate_students(models, prepared, "val", torch.device("cpu"))
        points.append({"iteration": int(snapshot.name), **{r: scores[r]["miou"] for r in ROLES}})
    return points


def run_once(
    base: Params, variant: Variant, seed: int, args: argparse.Namespace, with_curve: bool
) -> dict[str, Any]:
    """Train and score one run, or read it back if it finished before."""
    folder = run_folder(args.workdir, variant, seed)
    if (folder / RESULT).is_file():
        return json.loads((folder / RESULT).read_text())
    params = run_params(base, variant, seed, args)
    trainer = (SnapshotTrainer if with_curve else CoTrainer)(params, args.prepared, folder)
    metrics = trainer.run()
    students = load_students(params, folder, num_classes(params))
    scores, _ = evaluate_students(students, args.prepared, "test", torch.device("cpu"))
    result = {
        "method": variant.method,
        "switches": variant.switches,
        "seed": seed,
        "terms": metrics["terms"],
        "train_seconds": metrics["seconds_this_run"],
        "test_miou": {r: scores[r]["miou"] for r in ROLES},
        "curve": curve(params, folder, args.prepared) if with_curve else [],
    }
    write_json_atomic(folder / RESULT, result)
    # the result is all a finished run needs: drop the resume checkpoint and the snapshots
    (folder / LAST).unlink(missing_ok=True)
    shutil.rmtree(folder / SNAPSHOTS, ignore_errors=True)
    scored = ", ".join(f"{r} {v:.4f}" for r, v in result["test_miou"].items())
    print(f"{folder.name}: test mIoU {scored}", flush=True)
    return result


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_rows(
    variants: tuple[Variant, ...], results: dict[str, list[dict]], reference: str
) -> list[list[str]]:
    """Mean ± std per student, and whether the gap to ``reference`` exceeds the spread."""
    rows = []
    for variant in variants:
        runs = results[variant.label]
        if not runs:
            rows.append([variant.label, "0", "not run", "not run", ""])
            continue
        cells = [variant.label, str(len(runs))]
        verdicts = []
        for role in ROLES:
            mean, std = mean_std([100 * r["test_miou"][role] for r in runs])
            cells.append(f"{mean:.2f} ± {std:.2f}")
            ref_runs = results[reference]
            if variant.label != reference and ref_runs:
                ref_mean, ref_std = mean_std([100 * r["test_miou"][role] for r in ref_runs])
                gap = mean - ref_mean
                separated = abs(gap) > std + ref_std and len(runs) > 1 and len(ref_runs) > 1
                verdicts.append(
                    f"{role} {gap:+.2f} ({'beyond' if separated else 'within'} the spread)"
                )
        cells.append("; ".join(verdicts))
        rows.append(cells)
    return rows


def plot_curves(results: dict[str, list[dict]], labels: list[str], path: Path) -> None:
    """Validation mIoU against iterations for each method's first seed, one panel per student."""
    figure, axes = new_figure(1, 2, figsize=(10, 4), sharey=True)
    for axis, role in zip(axes, ROLES, strict=True):
        for label in labels:
            points = next((r["curve"] for r in results[label] if r["curve"]), [])
            if points:
                axis.plot(
                    [p["iteration"] for p in points],
                    [100 * p[role] for p in points],
                    marker="o",
                    label=label,
                )
        axis.set_title(f"{role} student")
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation mIoU (%)")
    axes[0].legend()
    save_figure(figure, path)


def main() -> None:
    args = parse_args()
    base = load_params(args.params)
    require_validated(args.prepared, args.validation)
    grid = MAIN + (ABLATIONS if args.ablations else ())
    results: dict[str, list[dict]] = {v.label: [] for v in grid}
    for seed in args.seeds:
        for variant in grid:
            with_curve = seed == args.seeds[0] and variant in MAIN
            results[variant.label].append(run_once(base, variant, seed, args, with_curve))
    budget = (
        f"{args.iterations} iterations, batch {args.batch}, crop {args.crop[0]}x{args.crop[1]}, "
        f"seeds {args.seeds}; students from scratch (no ImageNet weights); test split (233 "
        "images) at native 360x480, single scale"
    )
    rule = (
        "A gap counts as beyond the spread only when |mean difference| exceeds the sum of the "
        "two standard deviations; otherwise the budget does not separate the methods."
    )
    header = ["method", "runs", "CNN test mIoU (%)", "ViT test mIoU (%)", "vs independent"]
    extra = []
    if args.ablations:
        extra = [
            "",
            "### Ablation: which distillation terms",
            "",
            *markdown_table(
                [*header[:-1], "vs HFD + BSD (all)"],
                summary_rows(ABLATIONS, results, "all (= ours)"),
            ),
        ]
    plot_curves(results, [v.label for v in MAIN], args.curves_png)
    extra += ["", f"Learning curves (first seed, validation split): `{args.curves_png}`."]
    publish_table(
        args.out,
        "CamVid: co-distillation against the baselines",
        f"Budget: {budget}. {rule}",
        ("torch", "timm"),
        header,
        summary_rows(MAIN, results, "independent"),
        extra,
    )


if __name__ == "__main__":
    main()
