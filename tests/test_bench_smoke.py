"""Each benchmark script runs end to end on tiny data and writes a consistent table."""

import re
import subprocess
import sys

from codistill.config import PrepareConfig
from codistill.data import create_reader, prepare_dataset
from tests.conftest import REPO_ROOT


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
    rows = dict(re.findall(r"\| (PNG files|shards) \| ([\d.]+) \|", text))
    ratio = float(re.search(r"\| shards \|.*\| ([\d.]+)x \|", text).group(1))
    assert abs(ratio - float(rows["PNG files"]) / float(rows["shards"])) < 0.05 * ratio + 0.01


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
        timeout=300,
    )
    rows = dict(re.findall(r"\| (independent|dml|kdcl|ours) \| ([\d.]+) \|", table.read_text()))
    assert set(rows) == {"independent", "dml", "kdcl", "ours"}
    ratio = float(re.search(r"\| ours \|.*\| ([\d.]+) \|", table.read_text()).group(1))
    expected = float(rows["ours"]) / float(rows["independent"])
    assert abs(ratio - expected) <= 0.01 + 0.05 * expected
