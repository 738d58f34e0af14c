"""Shared fixtures: tiny dataset trees in each supported layout, built by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

TINY_HEIGHT, TINY_WIDTH = 24, 32
TINY_SPLITS = {"train": 6, "val": 2, "test": 3}
TRAIN_SIZE = (48, 64)


def synthetic_image(
    rng: np.random.Generator, size: tuple[int, int] = (TINY_HEIGHT, TINY_WIDTH)
) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly, like a photo rather than noise)."""
    coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR))


def synthetic_labels(
    rng: np.random.Generator, values: list[int], size: tuple[int, int] = (TINY_HEIGHT, TINY_WIDTH)
) -> np.ndarray:
    """A blocky label map (4×8 blocks) that uses every value in ``values``."""
    blocks = np.resize(np.asarray(values, dtype=np.uint8), 4 * 8)
    rng.shuffle(blocks)
    grid = blocks.reshape(4, 8)
    return grid.repeat(size[0] // 4, axis=0).repeat(size[1] // 8, axis=1)


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` as a PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def labelled_image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose colour follows its labels (a fixed colour per class), softened.

    Unlike noise labels, this is learnable: a student can tell the classes apart by colour.
    """
    colours = np.random.default_rng(12345).integers(30, 226, size=(256, 3))
    image = colours[labels].astype(np.float64) + rng.normal(0, 6, (*labels.shape, 3))
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1)
    )
    return np.asarray(blurred)


def build_camvid_tree(
    root: Path, seed: int = 0, size: tuple[int, int] = (TINY_HEIGHT, TINY_WIDTH)
) -> Path:
    """A CamVid-layout tree with TINY_SPLITS samples and every raw id 0..11 in each mask."""
    rng = np.random.default_rng(seed)
    for split, count in TINY_SPLITS.items():
        for i in range(count):
            name = f"{split[:2]}_{i:03d}.png"
            labels = synthetic_labels(rng, list(range(12)), size)
            save_png(labelled_image(labels, rng), root / split / name)
            save_png(labels, root / f"{split}annot" / name)
    return root


@pytest.fixture
def camvid_tree(tmp_path: Path) -> Path:
    """A fresh tiny CamVid tree."""
    return build_camvid_tree(tmp_path / "camvid")


@pytest.fixture(scope="session")
def tiny_validate_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A params file whose data gate expects the tiny tree's split sizes."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    sizes = "\n".join(f"    {s}: {n}" for s, n in TINY_SPLITS.items())
    path.write_text(f"validate:\n  split_sizes:\n{sizes}\n")
    return path


TINY_TRAIN_YAML = """\
train:
  method: {method}
  iterations: {iterations}
  batch_size: 2
  crop: [32, 48]
  scale: [0.75, 1.25]
  num_workers: 0
  log_every: {log_every}
  checkpoint_every: {checkpoint_every}
  channels_last: false
distill:
  warmup_iters: 2
  rbsd:
    window: 2
  hfd:
    mode: {hfd_mode}
evaluate:
  split: val
  overlays: 2
export:
  parity:
    resolutions: [[48, 64], [32, 48]]
    batch_sizes: [1, 2]
gates:
  min_miou: {min_miou}
tracking:
  enabled: {tracking}
validate:
  split_sizes: {{train: 6, val: 2, test: 3}}
"""


def tiny_params_file(
    directory: Path,
    method: str = "ours",
    iterations: int = 6,
    log_every: int = 2,
    checkpoint_every: int = 3,
    hfd_mode: str = "mimic",
    tracking: bool = False,
    min_miou: float = 0.0,
) -> Path:
    """A params.yaml for CPU-tiny training runs on the tiny CamVid tree."""
    path = directory / f"params-{method}-{iterations}-{hfd_mode}.yaml"
    path.write_text(
        TINY_TRAIN_YAML.format(
            method=method,
            iterations=iterations,
            log_every=log_every,
            checkpoint_every=checkpoint_every,
            hfd_mode=hfd_mode,
            tracking="true" if tracking else "false",
            min_miou=min_miou,
        )
    )
    return path


@pytest.fixture(scope="session")
def validated_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared and validated tiny CamVid: (prepared folder, passing validation folder)."""
    from codistill.config import PrepareConfig, ValidateConfig
    from codistill.data import create_reader, prepare_dataset
    from codistill.validation.report import validate_prepared, write_report

    base = tmp_path_factory.mktemp("validated")
    # pvt_v2_b0's spatial-reduction attention needs at least 32 pixels each way.
    tree = build_camvid_tree(base / "camvid", size=TRAIN_SIZE)
    prepared = base / "prepared"
    prepare_dataset(create_reader("camvid", tree), prepared, PrepareConfig())
    report = validate_prepared(prepared, ValidateConfig(split_sizes=dict(TINY_SPLITS)))
    assert report["passed"], report["failed_checks"]
    write_report(report, base / "validation")
    return prepared, base / "validation"


@pytest.fixture(scope="session")
def exported_students(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained students exported to ``cnn.onnx`` and ``vit.onnx`` as the export stage does.

    Their weights are kept beside the graphs as ``cnn.pt`` and ``vit.pt``.
    """
    import torch

    from codistill.config import parse_params
    from codistill.data import dataset_spec
    from codistill.export import export_onnx
    from codistill.export.onnx_graph import Normalization
    from codistill.export.stage import preprocessing
    from codistill.models import build_student

    folder = tmp_path_factory.mktemp("onnx")
    params = parse_params({}, "defaults")
    stats = folder / "stats.json"
    stats.write_text(json.dumps({"mean": [0.4, 0.42, 0.43], "std": [0.3, 0.31, 0.3]}))
    normalization = Normalization.of_prepared(folder)
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        student = build_student(cfg, 11)
        export_onnx(student, folder / f"{role}.onnx", "torchscript", 17, (32, 32), normalization)
        torch.save(student.state_dict(), folder / f"{role}.pt")
    contract = preprocessing(folder, dataset_spec("camvid"))
    (folder / "preprocessing.json").write_text(json.dumps(contract))
    stats.unlink()
    return folder


@pytest.fixture(scope="session")
def exported_variants(exported_students: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``exported_students`` plus their INT8 and FP16 graphs, as the export stage keeps them."""
    import shutil

    from codistill.export.variants import VARIANTS, build_variant

    folder = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8) for _ in range(4)]
    for role in ("cnn", "vit"):
        source = Path(shutil.copy(exported_students / f"{role}.onnx", folder))
        for variant in VARIANTS:
            build_variant(variant, source, calibration)
    return folder
