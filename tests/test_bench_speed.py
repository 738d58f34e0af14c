"""The speed benchmarks run at a tiny size and write tables whose columns agree."""

import json
import os
import re
import subprocess
import sys
from operator import truediv

import numpy as np
import pytest
import torch

from codistill.config import ROLES, parse_params
from codistill.data import create_reader, prepare_dataset
from codistill.engine.checkpoint import save_checkpoint
from codistill.export.stage import run_export
from codistill.models import build_student
from codistill.serving.model_repository import write_model_repository
from tests.conftest import (
    REPO_ROOT,
    TINY_MODELS,
    bench_module,
    over_repo,
    repo_params,
    write_params,
)

pytestmark = pytest.mark.cost(105)


def within_rounding(printed, printed_step, derive, a, b, step):
    """True if `printed` is `derive(a, b)` for some a and b that round to the printed a and b.

    `derive` must be monotonic in each argument, so the corners bound it; `step` is half
    the last printed digit of a and b, `printed_step` that of the derived value.
    """
    values = [derive(a + da, b + db) for da in (-step, step) for db in (-step, step)]
    return min(values) - printed_step <= printed <= max(values) + printed_step


def per_image(seconds: float, _base: float) -> float:
    """Images per second of a one-image step (``within_rounding``'s two-argument form)."""
    return 1 / seconds


def test_read_speed_bench_writes_its_table(camvid_tree, tmp_path):
    prepared = tmp_path / "prepared"
    prepare_dataset(create_reader("camvid", camvid_tree), prepared, repo_params().prepare)
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


def test_train_speed_bench_reports_the_chosen_methods_in_both_modes_against_independent(
    tmp_path,
):
    table = tmp_path / "train.md"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench/train_speed.py"),
            "--params",
            str(write_params(tmp_path / "params.yaml", TINY_MODELS)),
            "--batch",
            "1",
            "--crop",
            "32",
            "32",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--methods",
            "ours",
            "--out",
            str(table),
        ],
        check=True,
        capture_output=True,
        timeout=600,
        # bf16 is measured on a device that has it: forced, so that any CPU runs both modes
        env={**os.environ, "CODISTILL_CPU_BF16": "1"},
    )
    text = table.read_text()
    number = r"(-?[\d.]+)"
    rows = {
        m[0]: [float(x) for x in m[1:]]
        for m in re.findall(
            r"\| ([\w -]+) \| 1 \| " + r" \| ".join([number] * 4) + r" \| ([\d.]+)x \| "
            r"([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \|",
            text,
        )
    }
    assert list(rows) == ["independent", "ours"]  # the reference always, then the chosen
    base = {"float32": rows["independent"][0], "bf16": rows["independent"][2]}
    for f32, f32_rate, bf16, bf16_rate, speed_up, f32_ratio, bf16_ratio, *peaks in rows.values():
        # Every derived column must agree with the printed seconds, each of which is
        # rounded to 0.0005 s, plus the rounding of the column itself.
        assert within_rounding(f32_rate, 0.005, per_image, f32, base["float32"], 0.0005)
        assert within_rounding(bf16_rate, 0.005, per_image, bf16, base["bf16"], 0.0005)
        assert within_rounding(speed_up, 0.005, truediv, f32, bf16, 0.0005)
        assert within_rounding(f32_ratio, 0.0005, truediv, f32, base["float32"], 0.0005)
        assert within_rounding(bf16_ratio, 0.0005, truediv, bf16, base["bf16"], 0.0005)
        assert min(peaks) > 100  # at least torch and both students
    assert "Hot spots of one profiled `ours` step" in text
    profile = text.split("Hot spots", 1)[1]
    spots = re.findall(r"\| ([^|]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|", profile)
    assert 5 <= len(spots) <= 14
    bf16_ms = [float(s[2]) for s in spots]
    assert bf16_ms == sorted(bf16_ms, reverse=True)


def test_infer_speed_times_each_engine_after_an_untimed_call_of_its_own():
    calls = []
    engines = {name: lambda batch, name=name: calls.append(name) for name in ("a", "b")}
    times = bench_module("infer_speed").time_engines(engines, batch=None, rounds=2)
    # a warm-up each, then per round: a settling call and the timed one, engine by engine
    assert calls == ["a", "b", *(["a", "a", "b", "b"] * 2)]
    assert {name: len(seconds) for name, seconds in times.items()} == {"a": 2, "b": 2}


def test_infer_speed_sets_each_rounds_rate_against_that_rounds_peak():
    bench = bench_module("infer_speed")
    probes = {"torch matmul": [0.2, 1.0], "ORT MatMul": [0.4, 0.5]}  # the better: 0.2, 0.5 s
    peaks = bench.round_peaks(probes, size=1000)
    assert peaks == pytest.approx([10.0, 4.0])  # 2e9 FLOP per product
    # 10 GFLOP per image: 10 and 2 GFLOP/s, that is all of round 1's peak, half of round 2's
    (row,) = bench.speed_rows("cnn", {"PyTorch eager": [1.0, 5.0]}, 1, 10.0, peaks)
    assert row[-2:] == ["3.3", "75%"]  # the rate at the median time; the median share


def test_the_int8_bound_counts_only_the_matrix_operators():
    bench = bench_module("infer_speed")
    times = {"FusedConv": 3.0, "MatMul": 3.0, "Resize": 4.0, "Transpose": 2.0, "ArgMax": 0.0}
    share, bound = bench.matrix_bound(times)
    assert share == pytest.approx(0.5) and bound == pytest.approx(2.0)  # 12 ms, 6 of them left


def test_each_endpoint_slice_is_set_against_direct_runs_on_both_its_sides():
    bench = bench_module("endpoint_speed")
    events, direct_seconds = [], iter([0.10, 0.30, 0.20, 0.20, 0.40, 0.10])

    def direct() -> float:
        events.append("direct")
        return next(direct_seconds)

    def load(seconds: float) -> str:
        events.append("load")
        return f"slice of {seconds:g} s"

    slices = bench.paired_slices(load, direct, duration_s=bench.SLICES * 2.0)
    assert events == ["direct"] + ["load", "direct"] * bench.SLICES
    assert [report for report, _ in slices] == ["slice of 2 s"] * bench.SLICES
    assert [round(s, 6) for _, s in slices] == [0.2, 0.25, 0.2, 0.3, 0.25]


def test_a_direct_process_that_stops_is_named_with_its_graph(tmp_path):
    bench = bench_module("endpoint_speed")
    graph = tmp_path / "missing.onnx"  # the process fails to open it and exits
    images = np.zeros((1, 8, 8, 3), np.uint8)
    stopped = r"direct_rate\.py on .*missing\.onnx stopped: exit 1"
    with pytest.raises(RuntimeError, match=stopped), bench.direct_engine(graph, images) as direct:
        direct()


def test_an_endpoint_row_weighs_each_slice_against_its_own_direct_rate():
    from codistill.serving.loadtest import LoadReport

    bench = bench_module("endpoint_speed")

    def report(seconds, requests, p50, queue):
        return LoadReport(
            model="m", protocol="http", dynamic_batching=False, concurrency=8,
            seconds=seconds, requests=requests, errors=1, images_per_s=requests / seconds,
            p50_ms=p50, p95_ms=2 * p50, p99_ms=None, mean_ms=None,
            server_queue_ms=queue, server_compute_ms=None, first_error=None,
        )  # fmt: skip

    # a fast phase (direct 0.05 s per image) and a slow one (0.10 s): the endpoint runs at
    # 0.9 of direct in both, though its pooled rate is far below the fast phase's direct rate
    slices = [(report(2.0, 36, 10.0, 1.0), 0.05), (report(4.0, 36, 20.0, None), 0.10)]
    cells = bench.row_cells("vit", slices)
    assert cells[:3] == ["vit", "off", "8"]
    assert cells[3:5] == ["15.0", "30.0"]  # medians over the slices
    assert cells[5] == "12.00"  # 72 requests in 6 s
    assert cells[6] == "13.33"  # 2 s at 20/s and 4 s at 10/s
    assert cells[7] == "0.90"
    assert cells[8:] == ["1.0", "-", "2"]  # slices without a server figure are left out


def test_infer_speed_bench_times_every_engine_and_the_endpoint(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = repo_params(TINY_MODELS)
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        save_checkpoint(tmp_path / f"{role}.pt", build_student(cfg, 11).state_dict())
    raw = {
        "export": {"parity": {"resolutions": [[48, 64], [32, 48]]}},
        "train": {"scale": [0.75, 1.25]},
        "evaluate": {"scale": 1.0},
    }
    run_export(
        parse_params(over_repo(raw, TINY_MODELS), "test"), prepared, tmp_path, tmp_path / "onnx"
    )
    write_model_repository(tmp_path / "onnx", tmp_path / "repo", params.serving, ROLES)
    table = tmp_path / "infer.md"
    command = [sys.executable, str(REPO_ROOT / "bench/infer_speed.py")]
    command += ["--params", str(write_params(tmp_path / "params.yaml", TINY_MODELS))]
    command += ["--prepared", str(prepared)]
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
    # the operator profile: per student, operator rows whose times add up to at most the total
    profile = text.split("Where the graphs spend their time", 1)[1].split("Local Triton", 1)[0]
    for role, section in zip(("cnn", "vit"), profile.split("`")[1::2][:2], strict=True):
        assert section == role
    for block in profile.split("operator types")[1:]:
        rows = re.findall(r"\| (\w+) \| ([\d.]+) \|", block)
        total = float(re.search(r"\| all operators \| ([\d.]+) \|", block).group(1))
        assert len(rows) >= 3 and sum(float(ms) for _, ms in rows) <= total + 0.01 * len(rows)
        assert any(op in {"Conv", "MatMul", "QLinearConv", "QLinearMatMul"} for op, _ in rows)
    bounds = re.findall(
        r"is (\d+) % of the FP32 graph's kernel time: .* at most ([\d.]+)x", profile
    )
    assert len(bounds) == 2

    def free_matrix_work(percent: float, _: float) -> float:
        return 1 / (1 - percent / 100)

    for share, bound in bounds:  # the bound follows from the share
        assert 0 < int(share) < 100
        assert within_rounding(float(bound), 0.005, free_matrix_work, int(share), 0, 0.5)
    endpoint = re.findall(r"\| (cnn|vit) \| (on|off) \| 2 \| .* \| (\d+) \|\n", text)
    assert sorted((r, b) for r, b, _ in endpoint) == [
        ("cnn", "off"),
        ("cnn", "on"),
        ("vit", "off"),
        ("vit", "on"),
    ]
    assert all(errors == "0" for _, _, errors in endpoint)
    # ratio = endpoint images/s over the direct rate, measured in its own process around slices
    assert "0.5 s per row in 5 slices" in text and "process of its own" in text
    rates = re.findall(
        r"\| (?:cnn|vit) \| (?:on|off) \| 2 \|[^|]+\|[^|]+\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
        text,
    )
    assert len(rates) == 4
    for served, direct, ratio in rates:
        assert float(direct) > 0
        assert within_rounding(float(ratio), 0.005, truediv, float(served), float(direct), 0.005)
    assert (tmp_path / "speed.png").stat().st_size > 0
