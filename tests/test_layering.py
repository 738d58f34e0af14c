"""The core runs on a bare GPU machine: it must not pull in any edge library."""

import json
import re
import subprocess
import sys
import tomllib

from tests.conftest import REPO_ROOT

CORE = [
    "codistill.config",
    "codistill.data",
    "codistill.data.loading",
    "codistill.models",
    "codistill.distill",
    "codistill.engine.trainer",
    "codistill.engine.tracking",
    "codistill.evaluation.stage",
    "codistill.export",
    "codistill.export.stage",
    "codistill.publish.stage",
    "codistill.stages",
    "codistill.stages.runner",
    "codistill.pipeline.component_entry",
    "codistill.serving.model_repository",
    "codistill.serving.local_server",
    "codistill.cli",
]
EDGES = [
    "great_expectations",
    "dvc",
    "mlflow",
    "kfp",
    "tritonclient",
    "pytriton",
    "pandas",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "scipy",
]


# What `codistill serve` and `infer` load, and the load test's client module: the students
# run in Triton's own processes.
SERVING_FRONT = [
    "codistill.cli",
    "codistill.serving.local_server",
    "codistill.serving.grpc_front",
    "codistill.serving.loadtest",
]
TRAINING_LIBRARIES = ["torch", "torchvision", "timm", "onnx", "onnxruntime"]


def loaded(modules: list[str], libraries: list[str]) -> list[str]:
    """Which of ``libraries`` a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {libraries!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_core_imports_no_edge_library():
    assert loaded(CORE, EDGES) == []


def test_the_serving_front_loads_no_training_library():
    """The server's own process stays small (it held about 650 MiB of PyTorch it never used)."""
    assert loaded(SERVING_FRONT, TRAINING_LIBRARIES) == []
    assert "torch" in loaded(["codistill.export.stage"], TRAINING_LIBRARIES)  # the check sees it


def test_the_gate_edge_does_import_great_expectations():
    code = "import sys, codistill.validation.report; print('great_expectations' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().endswith("True")


def requirement_names(requirements):
    return {re.split(r"[\[<>=!~ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_package_installs_the_edges_as_extras_and_dev_gets_them_all():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    extras = {
        name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()
    }
    edges = {name.replace("_", "-") for name in EDGES} | {"nvidia-pytriton", "onnxruntime-gpu"}
    assert not core & edges, core & edges
    assert {"great-expectations", "dvc", "mlflow", "kfp", "pandas", "onnx"} <= extras["pipeline"]
    assert extras["cpu"] == {"onnxruntime"} and extras["gpu"] == {"onnxruntime-gpu"}
    assert {"nvidia-pytriton", "tritonclient"} <= extras["serving"]
    assert extras["study"] == {"scipy"}
    assert "codistill[pipeline,serving,cpu,study]" in project["optional-dependencies"]["dev"]


# The README's layers, top first: a package may import only from those before it.
LAYERS = [
    "config",
    "data",
    "models",
    "distill",
    "engine",
    "evaluation",
    "export",
    "validation",
    "serving",
    "lineage",
    "publish",
    "stages",
    "pipeline",
]
SHARED_MODULES = {"artifacts", "stage_result", "input_size", "reporting", "imports"}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` and the project's top-level packages it imports."""
    import ast

    found = {}
    for path in sorted((REPO_ROOT / "src" / "codistill" / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {
            name.split(".")[1] for name in names if name.startswith("codistill.")
        } - {package}
    return found


def test_each_layer_imports_only_the_layers_above_it():
    for depth, package in enumerate(LAYERS):
        allowed = set(LAYERS[:depth]) | SHARED_MODULES
        for module, imported in imported_packages(package).items():
            assert imported <= allowed, f"{package}/{module} imports {imported - allowed}"


def test_an_upward_import_is_caught():
    assert "engine" in set().union(*imported_packages("evaluation").values())
    allowed = set(LAYERS[: LAYERS.index("engine")]) | SHARED_MODULES
    assert not set().union(*imported_packages("evaluation").values()) <= allowed
