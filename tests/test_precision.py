import json
import os
import subprocess
import sys

import pytest
import torch

from codistill.config import ConfigError, load_params
from codistill.engine import precision as precision_module
from codistill.engine.precision import (
    FORCE_ENV,
    cpu_bf16_engine,
    cpu_flags,
    resolve_precision,
)
from codistill.engine.trainer import train_students
from tests.conftest import tiny_params_file

CPU = torch.device("cpu")
XEON_AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
EPYC_ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
EPYC_ZEN3 = frozenset({"avx2", "fma"})


@pytest.fixture(autouse=True)
def no_forced_detection(monkeypatch):
    monkeypatch.delenv(FORCE_ENV, raising=False)


def test_amp_gives_bf16_only_on_a_cpu_with_bf16_matrix_instructions():
    assert resolve_precision(True, CPU, XEON_AMX).mode == "bf16"
    assert "amx_bf16" in resolve_precision(True, CPU, XEON_AMX).reason
    assert resolve_precision(True, CPU, EPYC_ZEN4).mode == "bf16"
    assert "avx512_bf16" in resolve_precision(True, CPU, EPYC_ZEN4).reason
    fallback = resolve_precision(True, CPU, EPYC_ZEN3)
    assert fallback.mode == "float32" and not fallback.autocast
    assert "no bf16 instructions" in fallback.reason and "avx512_bf16" in fallback.reason
    off = resolve_precision(False, CPU, XEON_AMX)
    assert off.mode == "float32" and "train.amp is false" in off.reason


def test_the_detection_can_be_forced_both_ways_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "1")
    assert resolve_precision(True, CPU, EPYC_ZEN3).mode == "bf16"
    monkeypatch.setenv(FORCE_ENV, "0")
    assert resolve_precision(True, CPU, XEON_AMX).mode == "float32"
    monkeypatch.setenv(FORCE_ENV, "yes")
    with pytest.raises(ConfigError, match=f"{FORCE_ENV}='yes'"):
        cpu_bf16_engine(XEON_AMX)


def test_a_bad_forcing_value_stops_training_in_one_line_naming_it(validated_tiny, tmp_path):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, "independent", iterations=2, changes={"train.amp": True})
    command = [sys.executable, "-m", "codistill.cli", "train", "--params", str(params)]
    command += ["--prepared", str(prepared), "--validation", str(report)]
    command += ["--out", str(tmp_path / "run")]
    env = {**os.environ, FORCE_ENV: "yes", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"codistill train: error: {FORCE_ENV}='yes': expected 0 or 1"
    ]
    assert not (tmp_path / "run" / "cnn.pt").exists()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512_bf16 amx_bf16\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_autocast_context_computes_convolutions_in_bf16_and_float32_stays_float32():
    conv = torch.nn.Conv2d(3, 4, 3)
    images = torch.randn(1, 3, 8, 8)
    with resolve_precision(True, CPU, XEON_AMX).context(CPU):
        assert conv(images).dtype == torch.bfloat16
    with resolve_precision(True, CPU, EPYC_ZEN3).context(CPU):
        assert conv(images).dtype == torch.float32


@pytest.mark.parametrize("forced", ["0", "1"])
def test_a_run_records_and_logs_the_mode_it_trained_in(
    validated_tiny, tmp_path, monkeypatch, capsys, forced
):
    prepared, _ = validated_tiny
    monkeypatch.setenv(FORCE_ENV, forced)
    params = load_params(
        tiny_params_file(tmp_path, "ours", iterations=2, changes={"train.amp": True})
    )
    metrics = train_students(params, prepared, tmp_path / "run")
    mode = "bf16" if forced == "1" else "float32"
    assert metrics["precision"] == mode
    assert json.loads((tmp_path / "run" / "train_metrics.json").read_text())["precision"] == mode
    assert f"train: {mode} (" in capsys.readouterr().out
    # the losses stay finite, and the students are float32 whatever the mode
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics["final"].items() if "loss" in k)
    weights = torch.load(tmp_path / "run" / "cnn.pt", weights_only=True)
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_bf16_trains_other_weights_than_float32_and_never_resumes_a_float32_checkpoint(
    validated_tiny, tmp_path, monkeypatch, capsys
):
    prepared, _ = validated_tiny
    params = load_params(
        tiny_params_file(
            tmp_path, "independent", iterations=2, checkpoint_every=2, changes={"train.amp": True}
        )
    )
    monkeypatch.setenv(FORCE_ENV, "0")
    float32 = train_students(params, prepared, tmp_path / "f32")
    monkeypatch.setenv(FORCE_ENV, "1")
    # the same folder: its float32 checkpoint must not be taken up by the bf16 run
    bf16 = train_students(params, prepared, tmp_path / "f32")
    assert "from another configuration or code version" in capsys.readouterr().out
    assert bf16["iterations_this_run"] == 2 and bf16["precision"] == "bf16"
    assert bf16["weights_sha256"]["cnn"] != float32["weights_sha256"]["cnn"]


def test_the_detection_reads_this_machine_when_not_forced(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: XEON_AMX)
    assert cpu_bf16_engine() == "amx_bf16"
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: EPYC_ZEN3)
    assert cpu_bf16_engine() is None
