"""Does the train/evaluation geometry explain the students' scores? A measurement.

Validation mIoU at several inference scales, and with the CNN's untrained dilated ASPP taps
switched off.

A student trained on crops sees a smaller scene than the whole image it is scored on: its
deepest feature map (stride 16 for the CNN) is smaller in training than at evaluation, so the
off-centre taps of a dilated ASPP branch whose rate exceeds that map never receive a gradient
in training, yet fire at evaluation. This script scores trained students on the validation
split, logits always against the native labels, with the image first resized by each
``--scales`` factor, and once more at scale 1 with the off-centre taps of each dilated branch
zeroed, one rate at a time and all together.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn

from codistill.config import ROLES, TrainConfig, from_mapping, load_params
from codistill.data.loading import PreparedSplit
from codistill.evaluation.evaluate import evaluate_students
from codistill.evaluation.students import load_students
from environment import bench_parser, num_classes, publish_table

STRIDE = 16


def parse_args() -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--students", type=Path, default=Path("build/train"))
    parser.add_argument(
        "--result", type=Path, help="the study result JSON of the students (their training config)"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    return parser.parse_args()


def without_offcentre_taps(cnn: nn.Module, rates: tuple[int, ...]) -> nn.Module:
    """A copy of the CNN student whose ASPP branches at ``rates`` keep only their centre tap."""
    model = copy.deepcopy(cnn)
    # branches: [1x1, one 3x3 per configured rate ..., image pooling]
    for rate, branch in zip(cnn_rates(cnn), model.aspp.branches[1:-1], strict=True):
        if rate in rates:
            conv = branch[0]
            with torch.no_grad():
                centre = conv.weight[:, :, 1, 1].clone()
                conv.weight.zero_()
                conv.weight[:, :, 1, 1] = centre
    return model


def cnn_rates(cnn: nn.Module) -> tuple[int, ...]:
    """The dilation rates of the CNN's 3x3 ASPP branches."""
    return tuple(branch[0].dilation[0] for branch in cnn.aspp.branches[1:-1])


def feature_map(size: tuple[int, int]) -> str:
    """The stride-16 map size of an input of ``size``, as HxW."""
    return "x".join(str(-(-s // STRIDE)) for s in size)


def main() -> None:
    args = parse_args()
    params = load_params(args.params)
    students = load_students(params, args.students, num_classes(params))
    device = torch.device("cpu")
    rows = []

    native = tuple(PreparedSplit(args.prepared, args.split)[0, 0][1].shape)

    def score(label: str, models: dict[str, nn.Module], scale: float) -> None:
        scores, _ = evaluate_students(models, args.prepared, args.split, device, scale=scale)
        cells = [f"{100 * scores[r]['miou']:.2f}" if r in scores else "-" for r in ROLES]
        size = (int(native[0] * scale), int(native[1] * scale))
        rows.append([label, f"{scale:g}", feature_map(size), *cells])
        print(rows[-1], flush=True)

    for scale in args.scales:
        score("as trained", students, scale)
    rates = cnn_rates(students["cnn"])
    for subset in [(r,) for r in rates] + [rates]:
        label = f"CNN, ASPP rate {'+'.join(map(str, subset))} off-centre taps zeroed"
        score(label, {"cnn": without_offcentre_taps(students["cnn"], subset)}, 1.0)
    train = params.train
    if args.result:
        train = from_mapping(TrainConfig, json.loads(args.result.read_text())["config"]["train"])
    publish_table(
        args.out,
        "Train/evaluation geometry of the trained students",
        f"Students from `{args.students}`, trained on {train.crop[0]}x{train.crop[1]} crops of "
        f"images rescaled by {train.scale[0]:g}-{train.scale[1]:g} (the CNN's stride-16 map: "
        f"{feature_map(train.crop)} in training). {args.split} split, logits upsampled to and "
        f"scored against the native {native[0]}x{native[1]} labels; the image is resized by "
        "`scale` first.",
        ("torch", "timm"),
        ["students", "scale", "CNN stride-16 map", "CNN mIoU (%)", "ViT mIoU (%)"],
        rows,
    )


if __name__ == "__main__":
    main()
