"""The ``codistill`` command: one sub-command per pipeline stage, plus tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codistill.config import ConfigError, Params, load_params
from codistill.data.gate import UnvalidatedDataError, require_validated
from codistill.data.shards import EmptySplitError


def _prepare(args: argparse.Namespace) -> int:
    from codistill.data import PrepareError, create_reader, prepare_dataset

    params = load_params(args.params)
    reader = create_reader(params.data.dataset, args.data)
    try:
        summary = prepare_dataset(reader, args.out, params.prepare)
    except PrepareError as err:
        print(f"prepare: {err}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{s} {v['in_shards']}/{v['samples']}" for s, v in summary["splits"].items())
    print(
        f"prepared {summary['dataset']} into {args.out}: {counts} samples in shards, "
        f"{summary['total_bytes'] / 2**20:.1f} MiB"
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from codistill.validation.gate import validate_prepared, write_report

    params = load_params(args.params)
    report = validate_prepared(args.prepared, params.validate)
    summary_path = write_report(report, args.report)
    print(summary_path.read_text(), end="")
    return 0 if report["passed"] else 1


def _validated_params(args: argparse.Namespace) -> Params:
    """The parameters, once the prepared data is known to have passed the gate."""
    params = load_params(args.params)
    require_validated(args.prepared, args.report)
    return params


def _train(args: argparse.Namespace) -> int:
    from codistill.engine.distributed import shutdown_distributed
    from codistill.engine.trainer import CoTrainer

    params = _validated_params(args)
    try:
        trainer = CoTrainer(params, args.prepared, args.out, tracking=params.tracking.enabled)
        metrics = trainer.run()
    finally:
        shutdown_distributed()
    if metrics:
        final = metrics["final"]
        print(
            f"trained {metrics['method']} ({', '.join(metrics['terms']) or 'no cross terms'}) "
            f"to iteration {metrics['iterations']}: loss {final.get('loss_total', 0):.4f}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from codistill.evaluation.stage import run_evaluation

    params = _validated_params(args)
    summary = run_evaluation(params, args.prepared, args.train, args.out)
    for role, scores in summary.items():
        print(
            f"{role}: mIoU {scores['miou']:.4f}, pixel accuracy "
            f"{scores['pixel_accuracy']:.4f}, {scores['images_per_s']:.1f} images/s"
        )
    return 0


def _students(args: argparse.Namespace) -> int:
    from codistill.data import dataset_spec
    from codistill.models import build_student, count_parameters

    params = load_params(args.params)
    num_classes = dataset_spec(params.data.dataset).num_classes
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        model = build_student(cfg, num_classes)
        print(
            f"{role}: {cfg.arch} on {cfg.encoder}, {count_parameters(model) / 1e6:.2f} M parameters"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``codistill`` command."""
    parser = argparse.ArgumentParser(prog="codistill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--params",
            type=Path,
            default=Path("params.yaml"),
            help="parameters file (default: params.yaml)",
        )
        return sub

    prepare = command("prepare", "Encode a raw dataset tree into shards, manifest and stats.")
    prepare.add_argument("--data", type=Path, required=True, help="raw dataset root")
    prepare.add_argument("--out", type=Path, required=True, help="prepared output folder")
    prepare.set_defaults(run=_prepare)

    validate = command("validate", "Check a prepared dataset with the data gate.")
    validate.add_argument("--prepared", type=Path, required=True, help="prepared folder")
    validate.add_argument("--report", type=Path, required=True, help="JSON report to write")
    validate.set_defaults(run=_validate)

    train = command("train", "Co-train both students (resumes from OUT/last.pt).")
    train.add_argument("--prepared", type=Path, required=True, help="prepared folder")
    train.add_argument("--report", type=Path, required=True, help="passing validation report")
    train.add_argument("--out", type=Path, required=True, help="training output folder")
    train.set_defaults(run=_train)

    evaluate = command("evaluate", "Score both trained students on a split.")
    evaluate.add_argument("--prepared", type=Path, required=True, help="prepared folder")
    evaluate.add_argument("--report", type=Path, required=True, help="passing validation report")
    evaluate.add_argument("--train", type=Path, required=True, help="training output folder")
    evaluate.add_argument("--out", type=Path, required=True, help="evaluation output folder")
    evaluate.set_defaults(run=_evaluate)

    students = command("students", "Build both students and print their parameter counts.")
    students.set_defaults(run=_students)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``codistill`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        ConfigError,
        FileNotFoundError,
        KeyError,
        UnvalidatedDataError,
        EmptySplitError,
    ) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"codistill {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
