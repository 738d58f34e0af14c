"""The GPU study script, run on the CPU at a tiny size, without the pipeline libraries."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, tiny_params_file

pytestmark = pytest.mark.cost(80)

GPU_IMAGE_LACKS = (
    "mlflow",
    "dvc",
    "kfp",
    "great_expectations",
    "pandas",
    "tritonclient",
    "pytriton",
    "scipy",
    "matplotlib",
)


def test_gpu_study_script_runs_end_to_end_on_the_cpu_without_the_pipeline_libraries(
    validated_tiny, tmp_path
):
    """The device image has torch, timm, numpy, Pillow, PyYAML, tqdm and ONNX only."""
    prepared, validation = validated_tiny
    # Every Python process of the study reports, at exit, which of those libraries it loaded.
    watcher, imports = tmp_path / "image", tmp_path / "imports.log"
    watcher.mkdir()
    (watcher / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        f"LACKS = {GPU_IMAGE_LACKS!r}\n"
        "def report():\n"
        "    found = sorted({m.split('.')[0] for m in sys.modules} & set(LACKS))\n"
        f"    with open({str(imports)!r}, 'a') as log:\n"
        "        log.write(' '.join([sys.argv[0], *found]) + '\\n')\n"
        "atexit.register(report)\n"
    )
    params = tiny_params_file(tmp_path, "independent", iterations=2, checkpoint_every=1)
    out = tmp_path / "out"
    command = [str(REPO_ROOT / "bench/gpu_study.sh"), str(out), "--params", str(params)]
    command += ["--prepared", str(prepared), "--validation", str(validation)]
    command += ["--calibration-steps", "4", "--max-iterations", "4", "--score-reserve-s", "1"]
    command += ["--budget-s", "500", "--set", "train.crop=[32, 32]", "train.scale=[0.75, 1.25]"]
    command += ["train.num_workers=0", "train.compile=false", "train.batch_size=2"]
    env = {**os.environ, "PYTHONPATH": str(watcher), "PYTHON": sys.executable}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    smoke = json.loads((out / "smoke" / "smoke.json").read_text())
    assert smoke["iterations"] == 3 and smoke["onnx_parity"]["passed"]
    calibration = json.loads((out / "calibration.json").read_text())
    assert set(calibration["seconds_per_step"]) == {"independent", "dml", "kdcl", "ours"}
    runs = sorted((out / "results").glob("gpu-window-4it/*.json"))
    assert [p.stem for p in runs] == ["dml-seed0", "independent-seed0", "kdcl-seed0", "ours-seed0"]
    for path in runs:
        run = json.loads(path.read_text())
        assert run["iterations"] == 4 and run["config"]["train"]["crop"] == [32, 32]
        assert 0 <= run["scores"]["test"]["cnn"]["miou"] <= 1
    assert "done" in (out / "gpu_study.log").read_text()
    reports = imports.read_text().splitlines()
    assert len(reports) >= 10  # the study, torchrun's launcher and worker, 4 + 4 runs
    assert [line for line in reports if len(line.split()) > 1] == []
