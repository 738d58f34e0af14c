"""One run made on two CPU models: what float32 rounding does to the trained students.

Two CPU models run the same float32 arithmetic in another order (other kernels, other vector
widths), so a run's weights differ bit for bit from one to the other. This sets that drift
beside the one a study already pays for: one committed search run against the same run
made on another CPU model, checkpoint by checkpoint on the validation split, and the same
candidate's run at another seed on the first CPU. Its table goes into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from codistill.config import ROLES
from codistill.study.identity import accepted_identities
from codistill.study.migration import result_scoring
from codistill.study.results import result_path
from codistill.study.settings import resolve_params
from environment import publish_table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("bench/results/search/kdcl-960"))
    parser.add_argument(
        "--other",
        type=Path,
        default=Path("bench/results/machine-check/kdcl-960"),
        help="the same run made on another CPU model",
    )
    parser.add_argument("--key", default="default-seed0")
    parser.add_argument("--other-seed", default="default-seed1", help="the run at another seed")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    return parser.parse_args()


def read(folder: Path, key: str) -> dict[str, Any]:
    """The result ``key`` in ``folder``."""
    return json.loads(result_path(folder, key).read_text())


def counts_alike(
    first: dict[str, Any], other: dict[str, Any], params: Path, prepared: Path
) -> bool:
    """Whether both results count for ``first``'s run under the present code and parameters."""
    resolved = resolve_params(params, {**first["overrides"], "train.seed": first["seed"]})
    accepted = accepted_identities(resolved, prepared, result_scoring(first))
    return {first["identity"], other["identity"]} <= accepted


def val_points(run: dict[str, Any], role: str) -> list[float]:
    """``role``'s validation mIoU at each checkpoint, in points."""
    return [100 * c["val"][role]["miou"] for c in run["checkpoints"]]


def rows(first: dict[str, Any], other: dict[str, Any], seed: dict[str, Any]) -> list[list[str]]:
    """Per checkpoint and student: both CPUs' scores, their difference, and the seed's."""
    table = []
    for index, checkpoint in enumerate(first["checkpoints"]):
        cells = [str(checkpoint["iteration"])]
        for role in ROLES:
            a, b = val_points(first, role)[index], val_points(other, role)[index]
            cells += [f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}"]
            cells.append(f"{val_points(seed, role)[index] - a:+.2f}")
        table.append(cells)
    return table


def drift_line(first: dict[str, Any], other: dict[str, Any], seed: dict[str, Any]) -> str:
    """Each student's mean absolute drift over the checkpoints: the other CPU's, the seed's."""
    parts = []
    for role in ROLES:
        base = val_points(first, role)
        cpu, another = (
            statistics.fmean(abs(x - a) for x, a in zip(val_points(run, role), base, strict=True))
            for run in (other, seed)
        )
        parts.append(f"{role} {cpu:.2f} against {another:.2f}")
    return (
        "Mean absolute difference over the checkpoints, CPU B − A against the other seed − A "
        f"(points): {', '.join(parts)}."
    )


def main() -> None:
    args = parse_args()
    first, other = read(args.results, args.key), read(args.other, args.key)
    seed = read(args.results, args.other_seed)
    if not counts_alike(first, other, args.params, args.prepared):
        raise SystemExit(f"{args.key}: the two results do not both count for the run (identity)")
    cpus = [run["machine"]["cpu"] for run in (first, other)]
    same = first["weights_sha256"] == other["weights_sha256"]
    header = ["iteration"]
    for role in ROLES:
        name = role.upper() if role == "cnn" else "ViT"
        header += [f"{name} on A", f"{name} on B", f"{name} B − A", f"{name} other seed − A"]
    publish_table(
        args.out,
        "Machine check: one float32 run on two CPU models",
        f"Run `{args.key}` of `{args.results}` (CPU A: {cpus[0]}) made again as the same "
        f"run (both count for its identity) on CPU B ({cpus[1]}; `{args.other}`): validation "
        f"mIoU (%) at each checkpoint, and the difference that another seed "
        f"(`{args.other_seed}`, on A) makes. "
        f"Bit-identical weights: {'yes' if same else 'no'}.",
        ("torch", "timm"),
        header,
        rows(first, other, seed),
        extra=["", drift_line(first, other, seed)],
        key="machine-check",
    )


if __name__ == "__main__":
    main()
