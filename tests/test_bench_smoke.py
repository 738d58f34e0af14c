"""Each benchmark script runs end to end on tiny data and writes a consistent table."""

import json
import re
import subprocess
import sys
from operator import sub, truediv

import torch

from codistill.config import ROLES, PrepareConfig, parse_params
from codistill.data import create_reader, prepare_dataset
from codistill.engine.checkpoint import save_checkpoint
from codistill.export.stage import run_export
from codistill.models import build_student
from codistill.serving.model_repository import write_model_repository
from tests.conftest import REPO_ROOT


def within_rounding(printed, printed_step, derive, a, b, step):
    """True if `printed` is `derive(a, b)` for some a and b that round to the printed a and b.

    `derive` must be monotonic in each argument, so the corners bound it; `step` is half
    the last printed digit of a and b, `printed_step` that of the derived value.
    """
    values = [derive(a + da, b + db) for da in (-step, step) for db in (-step, step)]
    return min(values) - printed_step <= printed <= max(values) + printed_step


def test_read_speed_bench_writes_its_table(camvid_tree, tmp_path):
    prepared = tmp_path / "prepared"
    prepare_dataset(create_reader("camvid", camvid_tree), prepared, PrepareConfig())
    table = tmp_path / "read.md"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench/read_speed.py"),
            "--data",
            str(camvid_tree),
            "--prepared",
            str(prepared),
            "--batch",
            "2",
            "--rounds",
            "2",
            "--out",
            str(table),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    text = table.read_text()
    assert "24x32" in text and "command: `python" in text
    rates = {
        name: float(rate)
        for name, rate in re.findall(r"\| (PNG files|shards) \| [\d.]+ \| (\d+) \|", text)
    }
    ratio = float(re.search(r"\| shards \|.*\| ([\d.]+)x \|", text).group(1))
    # Tiny batches take well under a millisecond, so the ratio is checked against the
    # images/s column (printed to 0.5) rather than the milliseconds (printed to 0.05).
    assert within_rounding(ratio, 0.005, truediv, rates["shards"], rates["PNG files"], 0.5)


def test_train_speed_bench_reports_every_method_against_independent(tmp_path):
    table = tmp_path / "train.md"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench/train_speed.py"),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--batch",
            "1",
            "--crop",
            "32",
            "32",
            "--rounds",
            "1",
            "--out",
            str(table),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = table.read_text()
    rows = {
        m[0]: [float(x) for x in m[1:]]
        for m in re.findall(
            r"\| ([\w -]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (-?[\d.]+) \| "
            r"(-?[\d.]+)% \| (\d+) \|",
            text,
        )
    }
    assert set(rows) == {
        "independent",
        "dml",
        "kdcl",
        "ours",
        "HFD only",
        "region-BSD only",
        "pixel-BSD only",
    }
    base = rows["independent"][0]
    for seconds, images_per_s, ratio, extra, share, peak_mib in rows.values():
        # Every derived column must agree with the printed seconds, each of which is
        # rounded to 0.0005 s, plus the rounding of the column itself.
        assert within_rounding(images_per_s, 0.005, lambda s, b: 1 / s, seconds, base, 0.0005)
        assert within_rounding(ratio, 0.0005, truediv, seconds, base, 0.0005)
        assert within_rounding(extra, 0.0005, sub, seconds, base, 0.0005)
        assert within_rounding(share, 0.05, lambda s, b: 100 * (1 - b / s), seconds, base, 0.0005)
        assert peak_mib > 100  # at least torch and both students
    profile = text.split("Hot spots", 1)[1]
    spots = re.findall(r"\| ([^|]+) \| ([\d.]+) \| ([\d.]+)% \| (\d+) \|", profile)
    assert 5 <= len(spots) <= 12
    assert [float(s[1]) for s in spots] == sorted((float(s[1]) for s in spots), reverse=True)
    assert sum(float(s[2]) for s in spots) <= 100.5


def test_infer_speed_bench_times_every_engine_and_the_endpoint(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = parse_params({}, "defaults")
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        save_checkpoint(tmp_path / f"{role}.pt", build_student(cfg, 11).state_dict())
    raw = {"export": {"parity": {"resolutions": [[48, 64], [32, 48]]}}}
    run_export(parse_params(raw, "test"), prepared, tmp_path, tmp_path / "onnx")
    write_model_repository(tmp_path / "onnx", tmp_path / "repo", params.serving, ROLES)
    table = tmp_path / "infer.md"
    command = [sys.executable, str(REPO_ROOT / "bench/infer_speed.py")]
    command += ["--params", str(REPO_ROOT / "params.yaml"), "--prepared", str(prepared)]
    command += ["--students", str(tmp_path), "--onnx", str(tmp_path / "onnx")]
    command += ["--size", "32", "48", "--batches", "1", "2", "--rounds", "2", "--out", str(table)]
    command += ["--chart", str(tmp_path / "speed.png")]
    command += ["--triton", "--repository", str(tmp_path / "repo")]
    command += ["--concurrency", "2", "--duration", "0.5"]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    text = table.read_text()
    assert "Resolution 32x48" in text and "command: `python" in text
    variants = json.loads((tmp_path / "onnx" / "variants.json").read_text())["students"]
    for role in ("cnn", "vit"):
        kept = [v.upper() for v in ("int8", "fp16") if variants[role][v]["kept"]]
        engines = ["PyTorch eager", "ORT FP32", *(f"ORT {v}" for v in kept)]
        for batch in (1, 2):
            rows = re.findall(
                rf"\| {role} \| ([^|]+) \| {batch} \| ([\d.]+) \|[^|]+\|[^|]+\| ([\d.]+)x", text
            )
            assert sorted(name.strip() for name, _, _ in rows) == sorted(engines)
            p50 = {name.strip(): float(ms) for name, ms, _ in rows}
            for name, _, speedup in rows:
                eager, engine = p50["PyTorch eager"], p50[name.strip()]
                assert within_rounding(float(speedup), 0.005, truediv, eager, engine, 0.05)
        drop = variants[role]["int8"]["miou_drop_points"]
        assert f"| {role} | INT8 | " in text and f"| {drop:.2f} |" in text
    endpoint = re.findall(r"\| (cnn|vit) \| (on|off) \| 2 \| .* \| (\d+) \|\n", text)
    assert sorted((r, b) for r, b, _ in endpoint) == [
        ("cnn", "off"),
        ("cnn", "on"),
        ("vit", "off"),
        ("vit", "on"),
    ]
    assert all(errors == "0" for _, _, errors in endpoint)
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_quality_bench_summarizes_seeds_and_resumes_only_unfinished_runs(validated_tiny, tmp_path):
    prepared, validation = validated_tiny
    work, table = tmp_path / "runs", tmp_path / "quality.md"
    command = [sys.executable, str(REPO_ROOT / "bench/quality.py")]
    command += ["--params", str(REPO_ROOT / "params.yaml"), "--prepared", str(prepared)]
    command += ["--validation", str(validation), "--workdir", str(work), "--seeds", "0", "1"]
    command += ["--iterations", "2", "--batch", "1", "--crop", "32", "32"]
    command += ["--checkpoint-every", "2", "--workers", "0", "--out", str(table)]
    command += ["--curves-png", str(tmp_path / "curves.png")]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    finished = re.findall(r"^(\S+): test mIoU", first.stdout, re.MULTILINE)
    assert len(finished) == 16  # (4 methods + 4 ablations; the fifth is ours) × 2 seeds
    results = {p.parent.name: json.loads(p.read_text()) for p in work.glob("*/result.json")}
    text = table.read_text()
    for method in ("independent", "dml", "kdcl", "ours"):
        cnn = [100 * results[f"{method}-seed{s}"]["test_miou"]["cnn"] for s in (0, 1)]
        mean = sum(cnn) / 2
        row = re.search(rf"^\| {method} \| 2 \| ([\d.]+) ± ([\d.]+) \|", text, re.MULTILINE)
        assert abs(float(row.group(1)) - mean) < 0.006
        assert [p["iteration"] for p in results[f"{method}-seed0"]["curve"]] == [2]
    assert text.count("the spread") >= 6 and "| HFD only | 2 |" in text
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert not list(work.glob("*/last.pt")) and not list(work.glob("*/snapshots"))
    (work / "dml-seed1" / "result.json").unlink()
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    assert re.findall(r"^(\S+): test mIoU", again.stdout, re.MULTILINE) == ["dml-seed1"]
