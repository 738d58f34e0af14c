"""Shared fixtures: tiny dataset trees in each supported layout, built by the tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The suite tracks into a store of its own, never the workspace's ./mlflow.db nor a server the
# shell points at; a test that needs a server sets its own URI.
os.environ["MLFLOW_TRACKING_URI"] = (
    f"sqlite:///{tempfile.mkdtemp(prefix='codistill-tests-mlflow-')}/mlflow.db"
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

TINY_HEIGHT, TINY_WIDTH = 24, 32
TINY_SPLITS = {"train": 6, "val": 2, "test": 3}
TRAIN_SIZE = (48, 64)


def bench_module(name: str) -> types.ModuleType:
    """A script of ``bench/`` as a module (its own folder importable, as when it runs)."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    return module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the costliest test files first, so that `make test` hands them out first.

    `make test` gives each worker whole files, in collection order; a file's cost is its
    module's ``cost(seconds)`` mark (about its duration on the 2-core machine; 0 if unmarked).
    Started longest first, they leave little for one worker to finish while the other idles.
    """
    items.sort(key=lambda item: -module_cost(item))


def module_cost(item: pytest.Item) -> float:
    """The ``cost`` mark of the module that holds ``item``, in seconds (0 if unmarked)."""
    mark = item.get_closest_marker("cost")
    return mark.args[0] if mark else 0


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
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", TINY_TRAIN)


# The students of the tests that train or export: the same architectures at a third of the
# CNN's size (ResNet-10-T has ResNet-18's stage channels and strides; narrower decoders). The
# full-size CNN's checkpoints and graphs took most of a tiny run's time.
TINY_MODELS = {
    "models.cnn.encoder": "resnet10t",
    "models.cnn.decoder_channels": 64,
    "models.vit.decoder_channels": 64,
}

# What a CPU-tiny training run on the tiny CamVid tree changes in the repository's params.yaml.
TINY_TRAIN = {
    **TINY_MODELS,
    "train.batch_size": 2,
    "train.crop": [32, 48],
    "train.scale": [0.75, 1.25],
    "train.num_workers": 0,
    "train.channels_last": False,
    "distill.warmup_iters": 2,
    "distill.rbsd.window": 2,
    "evaluate.split": "val",
    "evaluate.overlays": 2,
    "evaluate.scale": 1.0,
    "export.parity.resolutions": [[48, 64], [32, 48]],
    "export.parity.batch_sizes": [1, 2],
    "validate.split_sizes": dict(TINY_SPLITS),
    "validate.image_size": None,
    "validate.class_share": {"default": [0.0, 1.0], "per_class": {}},
}


def repo_params_mapping(overrides: dict | None = None) -> dict:
    """The repository's ``params.yaml`` as a mapping, with dotted ``overrides`` set."""
    from codistill.config import with_overrides
    from codistill.config.loader import load_yaml_mapping

    return with_overrides(load_yaml_mapping(REPO_ROOT / "params.yaml"), overrides or {})


def over_repo(nested: dict, overrides: dict | None = None) -> dict:
    """The repository's ``params.yaml`` with dotted ``overrides``, ``nested`` merged over it."""
    from codistill.config.schema import merge_mappings

    return merge_mappings(repo_params_mapping(overrides), nested)


def write_params(path: Path, overrides: dict | None = None, nested: dict | None = None) -> Path:
    """Write the repository's params with dotted ``overrides`` and a ``nested`` mapping merged."""
    import yaml

    from codistill.config.schema import merge_mappings

    merged = merge_mappings(repo_params_mapping(overrides), nested or {})
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def repo_params(overrides: dict | None = None):
    """The repository's parameters with dotted ``overrides``, parsed and validated."""
    from codistill.config import parse_params

    return parse_params(repo_params_mapping(overrides), f"params.yaml with {overrides}")


def git(folder: Path, *args: str) -> str:
    """Run git in ``folder`` as a throwaway committer; its stdout, stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def tiny_params_file(
    directory: Path,
    method: str = "ours",
    iterations: int = 6,
    log_every: int = 2,
    checkpoint_every: int = 3,
    hfd_mode: str = "mimic",
    tracking: bool = False,
    min_miou_points: float = 0.0,
    changes: dict | None = None,
    name: str | None = None,
) -> Path:
    """A params.yaml for CPU-tiny training runs on the tiny CamVid tree.

    ``changes`` (dotted keys) go over the tiny settings; ``name`` names the file.
    """
    path = directory / (name or f"params-{method}-{iterations}-{hfd_mode}.yaml")
    changes = {
        **TINY_TRAIN,
        "train.method": method,
        "train.iterations": iterations,
        "train.log_every": log_every,
        "train.checkpoint_every": checkpoint_every,
        "distill.hfd.mode": hfd_mode,
        "tracking.enabled": tracking,
        "gates.min_miou_points": min_miou_points,
        **(changes or {}),
    }
    return write_params(path, changes)


@pytest.fixture(scope="session")
def validated_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared and validated tiny CamVid: (prepared folder, passing validation folder)."""
    from codistill.data import create_reader, prepare_dataset
    from codistill.validation.report import validate_prepared, write_report

    base = tmp_path_factory.mktemp("validated")
    # pvt_v2_b0's spatial-reduction attention needs at least 32 pixels each way.
    tree = build_camvid_tree(base / "camvid", size=TRAIN_SIZE)
    prepared = base / "prepared"
    params = repo_params(TINY_TRAIN)
    prepare_dataset(create_reader("camvid", tree), prepared, params.prepare)
    report = validate_prepared(prepared, params.validate)
    assert report["passed"], report["failed_checks"]
    write_report(report, base / "validation")
    return prepared, base / "validation"


@pytest.fixture(scope="session")
def exported_students(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained students exported to ``cnn.onnx`` and ``vit.onnx`` as the export stage does.

    Their weights are kept beside the graphs as ``cnn.pt`` and ``vit.pt``.
    """
    import torch

    from codistill.data import dataset_spec
    from codistill.export.onnx_graph import Normalization, export_onnx
    from codistill.export.stage import preprocessing
    from codistill.models import build_student

    folder = tmp_path_factory.mktemp("onnx")
    params = repo_params()
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


@pytest.fixture(scope="module")
def repository(exported_students: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported students published as a model repository (a small warm-up)."""
    from tests.servers.triton_server import served_repository

    return served_repository(exported_students, tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """``codistill serve`` on ``repository`` with the test pixel budget, for a test module."""
    from tests.servers.triton_server import TEST_MAX_PIXELS, triton_server

    log = tmp_path_factory.mktemp("triton") / "serve.log"
    with triton_server(repository, log, TEST_MAX_PIXELS) as running:
        yield running
