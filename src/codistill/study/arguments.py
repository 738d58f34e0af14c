"""The ``codistill study`` sub-commands and their options."""

from __future__ import annotations

import argparse
from pathlib import Path

from codistill.study.shards import add_shard_argument

ACTIONS = {
    "plan": "Check a plan file (every row's settings included) and list its runs and their state.",
    "run": "Train and score the plan's missing runs; an unfinished run resumes where it stopped.",
    "report": "Write the plan's report (rows, primary claims, per class, secondary) from its "
    "runs, or a committed regime's or search's tables (--regime, --search).",
}


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``plan``, ``run`` and ``report`` under ``codistill study``."""
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help_text in ACTIONS.items():
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "plan_file",
            type=Path,
            metavar="PLAN",
            help="the study's plan (YAML)"
            + ("; with --regime or --search, a studies file" if name == "report" else ""),
        )
        sub.add_argument("--params", type=Path, default=Path("params.yaml"), help="base params")
        sub.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
        sub.add_argument(
            "--results",
            type=Path,
            help="the runs' result files (default: a folder named after the plan, beside it)",
        )
        sub.add_argument(
            "--workdir",
            type=Path,
            default=Path("build/study"),
            help="where runs train and keep their checkpoints (default: build/study)",
        )
        if name == "run":
            sub.add_argument(
                "--validation",
                type=Path,
                default=Path("build/validate"),
                help="the validate stage's output: the prepared data must have passed it",
            )
            sub.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
            sub.add_argument(
                "--no-tracking",
                dest="tracking",
                action="store_false",
                help="do not record the runs in MLflow (default: each run is an MLflow run)",
            )
            add_shard_argument(sub)
        if name == "report":
            sub.add_argument(
                "--out",
                type=Path,
                help="default: report.md in the results folder; for a regime or search, "
                "<workdir>/<name>-report.md",
            )
            sub.add_argument(
                "--readme",
                type=Path,
                help="also write a finished plan's headline (rows, primary claims in words) "
                "into this file's confirmation-headline section",
            )
            committed = sub.add_mutually_exclusive_group()
            committed.add_argument(
                "--regime",
                help="report this regime of a studies file (PLAN is then that file, for "
                "example bench/studies.yaml; results default to bench/results/quality)",
            )
            committed.add_argument(
                "--search",
                help="report this validation search of a studies file (results default to "
                "bench/results/search)",
            )
            sub.add_argument(
                "--seeds",
                type=int,
                nargs="+",
                help="a search's seeds (default: those its first candidate has results for)",
            )
    migrate = actions.add_parser(
        "migrate",
        help="Give results made under the first identity rule the present one, where it holds.",
        description="Rewrite the identity of each result that the first rule (every term's "
        "options hashed) still counts for its run; the old identity stays beside it.",
    )
    migrate.add_argument("folders", type=Path, nargs="+", help="folders of result files")
    migrate.add_argument("--params", type=Path, default=Path("params.yaml"), help="base params")
    migrate.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    _add_replay_arguments(actions)


def _add_replay_arguments(actions: argparse._SubParsersAction) -> None:
    """``replay`` and ``reproduce``: the same weights from two codes, or from a committed run."""
    from codistill.study.code_equivalence import EQUIVALENCE_FILE, REPRODUCTIONS_FILE

    replay = actions.add_parser(
        "replay",
        help="Train every setting the committed results use, past its warm-ups, with an "
        "earlier commit's code and the present code; record the two code digests as "
        "equivalent if every student's weights match.",
    )
    replay.add_argument("--from", dest="commit", required=True, help="the earlier code's commit")
    replay.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results"),
        help="the committed results whose settings the replay covers",
    )
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--workdir", type=Path, default=Path("build/bench/replay"))
    replay.add_argument("--record", type=Path, default=EQUIVALENCE_FILE)
    reproduce = actions.add_parser(
        "reproduce",
        help="Train a committed run's whole schedule again with a commit's code and record "
        "whether its weights match.",
    )
    reproduce.add_argument("--regime", required=True)
    reproduce.add_argument("--key", required=True, help="a committed run, e.g. ours-seed0")
    reproduce.add_argument("--commit", default="HEAD", help="whose code trains it (default HEAD)")
    reproduce.add_argument("--results", type=Path, default=Path("bench/results/quality"))
    reproduce.add_argument("--workdir", type=Path, default=Path("build/bench/reproduce"))
    reproduce.add_argument("--record", type=Path, default=REPRODUCTIONS_FILE)
    for sub in (replay, reproduce):
        sub.add_argument("--threads", type=int, default=1)
        sub.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
        sub.add_argument("--validation", type=Path, default=Path("build/validate"))
