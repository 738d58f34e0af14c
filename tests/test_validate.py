import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codistill.cli import main
from codistill.config import ClassShareBounds
from codistill.data import UnvalidatedDataError, create_reader, prepare_dataset, require_validated
from codistill.validation.report import validate_prepared
from tests.conftest import TINY_SPLITS, TINY_TRAIN, repo_params, save_png

TINY_GATE = repo_params({**TINY_TRAIN, "validate.image_size": [24, 32]}).validate


def truncate_image(tree: Path) -> None:
    path = tree / "train" / "tr_001.png"
    path.write_bytes(path.read_bytes()[:-40])


def shrink_mask(tree: Path) -> None:
    path = tree / "valannot" / "va_000.png"
    Image.open(path).resize((16, 12), Image.NEAREST).save(path)


def shrink_pair(tree: Path) -> None:
    """An image and its mask that agree with each other, at a size the dataset does not have."""
    for folder in ("train", "trainannot"):
        path = tree / folder / "tr_002.png"
        Image.open(path).resize((16, 12), Image.NEAREST).save(path)


def write_label_200(tree: Path) -> None:
    path = tree / "trainannot" / "tr_004.png"
    labels = np.asarray(Image.open(path)).copy()
    labels[0, :5] = 200
    save_png(labels, path)


def convert_image(tree: Path, name: str, mode: str) -> None:
    path = tree / name
    Image.open(path).convert(mode).save(path)


def grey_image(tree: Path) -> None:
    convert_image(tree, "train/tr_003.png", "L")


def rgba_image(tree: Path) -> None:
    convert_image(tree, "test/te_000.png", "RGBA")


def remove_mask(tree: Path) -> None:
    (tree / "testannot" / "te_002.png").unlink()


def duplicate_across_splits(tree: Path) -> None:
    shutil.copyfile(tree / "train" / "tr_000.png", tree / "test" / "te_001.png")


def drop_val_sample(tree: Path) -> None:
    (tree / "val" / "va_001.png").unlink()
    (tree / "valannot" / "va_001.png").unlink()


CORRUPTIONS: list[tuple[Callable[[Path], None], str, dict[str, str]]] = [
    (truncate_image, "image_decodes", {"train/tr_001": "image: cannot decode"}),
    (shrink_mask, "mask_size_matches_image", {"val/va_000": "image 24x32, mask 12x16"}),
    (shrink_pair, "image_size_as_configured", {"train/tr_002": "image 12x16, expected 24x32"}),
    (write_label_200, "label_values_valid", {"train/tr_004": "invalid raw values 200 in 5 pixels"}),
    (grey_image, "image_decodes", {"train/tr_003": "image: mode L, not RGB"}),
    (rgba_image, "image_decodes", {"test/te_000": "image: mode RGBA, not RGB"}),
    (remove_mask, "mask_decodes", {"test/te_002": "mask: file not found"}),
    (
        duplicate_across_splits,
        "no_content_in_two_splits",
        {"train/tr_000": "is also in another split", "test/te_001": "is also in another split"},
    ),
    (drop_val_sample, "split_sizes", {"val": "1 samples, expected 2"}),
]


def prepare(tree: Path, out: Path) -> Path:
    prepare_dataset(create_reader("camvid", tree), out, repo_params().prepare)
    return out


def test_clean_dataset_passes_every_check(camvid_tree, tmp_path):
    report = validate_prepared(prepare(camvid_tree, tmp_path / "p"), TINY_GATE)
    assert report["passed"], report["failed_checks"]
    assert len(report["checks"]) == 8
    assert report["samples"] == sum(TINY_SPLITS.values())


@pytest.mark.parametrize(
    ("corrupt", "check", "offenders"), CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS]
)
def test_each_corruption_fails_exactly_its_check_naming_the_sample(
    camvid_tree, tmp_path, corrupt, check, offenders
):
    corrupt(camvid_tree)
    report = validate_prepared(prepare(camvid_tree, tmp_path / "p"), TINY_GATE)
    assert not report["passed"]
    assert report["failed_checks"] == [check]
    failed = next(c for c in report["checks"] if c["check"] == check)
    found = {o["id"]: o["detail"] for o in failed["offenders"]}
    assert sorted(found) == sorted(offenders)
    for sample_id, detail in offenders.items():
        assert detail in found[sample_id]


def test_an_unreadable_file_is_named_once_by_the_gate(camvid_tree, tmp_path, monkeypatch):
    # Root reads every file whatever its mode, so the OS's refusal is stood in for.
    unreadable = camvid_tree / "val" / "va_001.png"

    def refuse(path: Path) -> None:
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))

    real_open, real_read_bytes = Image.open, Path.read_bytes
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: refuse(p) or real_open(p, *a, **k))
    monkeypatch.setattr(Path, "read_bytes", lambda p: refuse(p) or real_read_bytes(p))
    report = validate_prepared(prepare(camvid_tree, tmp_path / "p"), TINY_GATE)
    assert report["failed_checks"] == ["image_decodes"]
    (failed,) = (c for c in report["checks"] if c["check"] == "image_decodes")
    assert failed["offenders"] == [
        {"id": "val/va_001", "detail": "image: cannot read (permission denied)"}
    ]


def test_class_share_outside_bounds_names_the_class(camvid_tree, tmp_path):
    shares = ClassShareBounds(default=(0.0, 1.0), per_class={"road": (0.5, 1.0)})
    gate = replace(repo_params(TINY_TRAIN).validate, class_share=shares)
    report = validate_prepared(prepare(camvid_tree, tmp_path / "p"), gate)
    assert report["failed_checks"] == ["class_shares_within_bounds"]
    offender = report["checks"][-1]["offenders"]
    assert [o["id"] for o in offender] == ["road"]
    assert "outside [0.5, 1.0]" in offender[0]["detail"]


def test_cli_failure_exits_nonzero_and_the_gate_refuses_the_data(
    camvid_tree, tmp_path, tiny_validate_params, capsys
):
    prepared = prepare(camvid_tree, tmp_path / "p")
    validation = tmp_path / "validate"
    report_path = validation / "validation.json"
    argv = [
        "validate",
        "--params",
        str(tiny_validate_params),
        "--prepared",
        str(prepared),
        "--out",
        str(validation),
    ]
    assert main(argv) == 0
    assert require_validated(prepared, validation)["passed"]

    remove_mask(camvid_tree)
    prepare(camvid_tree, prepared)
    with pytest.raises(UnvalidatedDataError, match="another manifest"):
        require_validated(prepared, validation)

    assert main(argv) == 1
    assert "[FAIL] mask_decodes" in capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["passed"] is False and report["failed_checks"] == ["mask_decodes"]
    summary = report_path.with_suffix(".txt").read_text()
    assert "test/te_002: mask: file not found" in summary
    with pytest.raises(UnvalidatedDataError, match=r"validation failed \(mask_decodes\)"):
        require_validated(prepared, validation)


def test_gate_without_a_report_refuses(tmp_path):
    with pytest.raises(UnvalidatedDataError, match="no validation report"):
        require_validated(tmp_path, tmp_path / "validate")
