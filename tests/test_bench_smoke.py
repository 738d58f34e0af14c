"""Each benchmark script runs end to end on tiny data and writes a consistent table."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from operator import truediv

import pytest
import torch
import yaml
from scipy.stats import t

from codistill.config import ROLES, parse_params
from codistill.data import create_reader, prepare_dataset
from codistill.engine.checkpoint import save_checkpoint
from codistill.export.stage import run_export
from codistill.models import build_student
from codistill.serving.model_repository import write_model_repository
from codistill.study.image_counts import read_image_counts
from tests.conftest import REPO_ROOT, over_repo, repo_params, tiny_params_file


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
            str(REPO_ROOT / "params.yaml"),
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
            "kdcl",
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
    assert list(rows) == ["independent", "kdcl", "ours"]  # the reference always, in order
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


def test_infer_speed_bench_times_every_engine_and_the_endpoint(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = repo_params()
    torch.manual_seed(0)
    for role, cfg in (("cnn", params.models.cnn), ("vit", params.models.vit)):
        save_checkpoint(tmp_path / f"{role}.pt", build_student(cfg, 11).state_dict())
    raw = {
        "export": {"parity": {"resolutions": [[48, 64], [32, 48]]}},
        "train": {"scale": [0.75, 1.25]},
        "evaluate": {"scale": 1.0},
    }
    run_export(parse_params(over_repo(raw), "test"), prepared, tmp_path, tmp_path / "onnx")
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
    # the operator profile: per student, operator rows whose times add up to at most the total
    profile = text.split("Where the graphs spend their time", 1)[1].split("Local Triton", 1)[0]
    for role, section in zip(("cnn", "vit"), profile.split("`")[1::2][:2], strict=True):
        assert section == role
    for block in profile.split("operator types")[1:]:
        rows = re.findall(r"\| (\w+) \| ([\d.]+) \|", block)
        total = float(re.search(r"\| all operators \| ([\d.]+) \|", block).group(1))
        assert len(rows) >= 3 and sum(float(ms) for _, ms in rows) <= total + 0.01 * len(rows)
        assert any(op in {"Conv", "MatMul", "QLinearConv", "QLinearMatMul"} for op, _ in rows)
    endpoint = re.findall(r"\| (cnn|vit) \| (on|off) \| 2 \| .* \| (\d+) \|\n", text)
    assert sorted((r, b) for r, b, _ in endpoint) == [
        ("cnn", "off"),
        ("cnn", "on"),
        ("vit", "off"),
        ("vit", "on"),
    ]
    assert all(errors == "0" for _, _, errors in endpoint)
    # ratio = endpoint images/s over the direct rate measured in its own process
    assert "process of its own started before the server" in text
    rates = re.findall(
        r"\| (?:cnn|vit) \| (?:on|off) \| 2 \|[^|]+\|[^|]+\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
        text,
    )
    assert len(rates) == 4
    for served, direct, ratio in rates:
        assert float(direct) > 0
        assert within_rounding(float(ratio), 0.005, truediv, float(served), float(direct), 0.005)
    assert (tmp_path / "speed.png").stat().st_size > 0


def tiny_studies(directory):
    """A studies file with a two-iteration regime and search for the tiny tree."""
    schedule = {
        "train.iterations": 2,
        "train.batch_size": 1,
        "train.checkpoint_every": 1,
        "train.num_workers": 0,
    }
    path = directory / "studies.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "regimes": {
                    "tiny": {
                        "description": "Two iterations on the tiny tree.",
                        "params": schedule,
                        "seeds": [0, 1],
                        "ablation_seeds": [0],
                        "score_last": 2,
                    },
                    "tiny-single": {
                        "description": "Two iterations, the last checkpoint scored.",
                        "params": schedule,
                        "seeds": [0],
                        "ablation_seeds": [],
                        "score_last": 1,
                        "tuned": [{"search": "tiny-ours", "candidate": "balanced"}],
                    },
                },
                "searches": {
                    "tiny": {
                        "description": "Class balance on the tiny tree.",
                        "base": {**schedule, "train.method": "independent"},
                        "candidates": {"plain": {}, "balanced": {"train.class_balance": 0.5}},
                    },
                    "tiny-ours": {
                        "description": "Class balance of `ours` on the tiny tree.",
                        "base": {**schedule, "train.method": "ours"},
                        "candidates": {"default": {}, "balanced": {"train.class_balance": 0.5}},
                    },
                },
            }
        )
    )
    return path


def bench_command(script, validated_tiny, tmp_path):
    prepared, validation = validated_tiny
    params = tiny_params_file(tmp_path, "independent", iterations=2, checkpoint_every=1)
    command = [sys.executable, str(REPO_ROOT / "bench" / script)]
    command += ["--params", str(params), "--prepared", str(prepared)]
    command += ["--validation", str(validation), "--studies", str(tiny_studies(tmp_path))]
    command += ["--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    return [*command, "--out", str(tmp_path / "results.md")]


def trained_keys(stdout):
    """The runs a bench trained, from the lines it prints per scored checkpoint."""
    return sorted(set(re.findall(r"^(\S+) @ \d+:", stdout, re.MULTILINE)))


def cnn_scores(results, method, seed):
    return 100 * results[f"{method}-seed{seed}"]["scores"]["test"]["cnn"]["miou"]


def test_quality_bench_pairs_seeds_persists_runs_and_rewrites_tables_from_them(
    validated_tiny, tmp_path
):
    command = bench_command("quality.py", validated_tiny, tmp_path)
    command += ["--regime", "tiny", "--readme", str(tmp_path / "README.md")]
    command += ["--curves-png", str(tmp_path / "curves.png")]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    folder = tmp_path / "results/tiny"
    results = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert len(trained_keys(first.stdout)) == len(results) == 12  # 4 methods x 2 + 4 ablations
    # each with its final students' per-image counts on both splits
    assert {p.name.removesuffix(".images.npz") for p in folder.glob("*.images.npz")} == set(results)
    counts = read_image_counts(folder / "ours-seed0.images.npz")
    assert set(counts.counts) == {(s, r) for s in ("val", "test") for r in ("cnn", "vit")}
    for result in results.values():
        assert [c["iteration"] for c in result["checkpoints"]] == [1, 2]
        assert {"code_digest", "commit", "machine", "config", "weights_sha256"} <= set(result)
        assert len(result["scores"]["test"]["vit"]["per_class_iou"]) == 11
    # finished runs keep their JSON and final students, not the resume checkpoint or snapshots
    assert not list((tmp_path / "work").rglob("last.pt"))
    assert not list((tmp_path / "work").rglob("snapshots"))
    assert len(list((tmp_path / "work").rglob("cnn.pt"))) == 12
    text = (tmp_path / "results.md").read_text()
    cnn_table = text.split("### CNN")[1].split("###")[0]
    for method in ("dml", "kdcl", "ours"):
        diffs = [
            100 * results[f"{method}-seed{s}"]["scores"]["test"]["cnn"]["miou"]
            - 100 * results[f"independent-seed{s}"]["scores"]["test"]["cnn"]["miou"]
            for s in (0, 1)
        ]
        mean = statistics.fmean(diffs)
        half = t.ppf(0.975, 1) * statistics.stdev(diffs) / 2**0.5
        row = re.search(
            rf"^\| {method} \| 2 \| [^|]+ \| ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] "
            r"\(n=2\) \| ([a-z ]+) \|",
            cnn_table,
            re.MULTILINE,
        )
        printed = [float(row.group(i)) for i in (1, 2, 3)]
        assert printed == pytest.approx([mean, mean - half, mean + half], abs=0.006)
        excludes_zero = mean - half > 0 or mean + half < 0
        assert (row.group(4) != "no separation") == excludes_zero
    better = max(("dml", "kdcl"), key=lambda b: sum(cnn_scores(results, b, s) for s in (0, 1)))
    diffs = [cnn_scores(results, "ours", s) - cnn_scores(results, better, s) for s in (0, 1)]
    vs_best = re.search(
        r"^\| ours \|.*\| ([+-][\d.]+) \[[^]]+\] \(n=2, vs (\w+)\) \|", cnn_table, re.M
    )
    assert vs_best.group(2) == better
    assert float(vs_best.group(1)) == pytest.approx(statistics.fmean(diffs), abs=0.006)
    assert "| all (= ours) | 1 |" in text and "| HFD only | 1 |" in text
    # diagnostics: the window of iteration 1 has no logged row (log_every 2), iteration 2 has
    diagnostics = text.split("### Diagnostics")[1]
    assert re.search(r"^\| 1-1 \| - \| - \| - \| - \| - \| - \| - \|$", diagnostics, re.M)
    logged = [
        statistics.fmean(results[f"ours-seed{s}"]["curves"][-1]["pbsd_vit_teaches"] for s in (0, 1))
    ]
    row = re.search(
        r"^\| 2-2 \| ([\d.]+) % \| ([\d.]+) % \| ([\d.]+) % \| ([\d.]+) % \|", diagnostics, re.M
    )
    assert float(row.group(4)) == pytest.approx(100 * logged[0], abs=0.06)
    readme = (tmp_path / "README.md").read_text()
    assert "quality-headline" in readme
    # the README's reading of the diagnostics: the only logged row is both first and last
    late = round(100 * logged[0])
    assert f"the ViT at {late} % → {late} %" in readme.split("quality-diagnostics")[1]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "results/tiny").glob("*")}

    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    assert trained_keys(again.stdout) == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "README.md").read_text() == readme

    stale = tmp_path / "results/tiny/dml-seed1.json"
    stale.write_text(json.dumps({**results["dml-seed1"], "identity": "other code"}))
    tables = subprocess.run(
        [*command, "--no-train"], check=True, capture_output=True, text=True, timeout=900
    )
    assert trained_keys(tables.stdout) == []
    text = (tmp_path / "results.md").read_text()
    assert "Not counted: 1 result(s) made with other code, configuration, data or scoring " in text
    assert "(dml-seed1)" in text
    assert re.search(r"^\| dml \| 1 \|", text.split("### CNN")[1], re.MULTILINE)
    rerun = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    assert trained_keys(rerun.stdout) == ["dml-seed1"]


def test_quality_bench_adds_a_row_for_the_setting_a_search_chose_from_the_search_runs(
    validated_tiny, tmp_path
):
    search = [*bench_command("search.py", validated_tiny, tmp_path), "tiny-ours"]
    search += ["--candidates", "balanced", "--out", str(tmp_path / "search.md")]
    subprocess.run(search, check=True, capture_output=True, text=True, timeout=900)
    searched = json.loads((tmp_path / "results/tiny-ours/balanced-seed0.json").read_text())
    command = bench_command("quality.py", validated_tiny, tmp_path)
    command += ["--regime", "tiny-single", "--readme", str(tmp_path / "README.md")]
    command += ["--curves-png", str(tmp_path / "curves.png")]
    command += ["--search-results", str(tmp_path / "results")]
    command += ["--search-workdir", str(tmp_path / "work")]
    command += ["--only", "independent-seed0", "ours-balanced-seed0"]
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    # the tuned row's seed-0 run is the search's, its kept students scored on the test split
    assert trained_keys(result.stdout) == ["independent-seed0"]
    assert "ours-balanced-seed0: its search run scored on the test split" in result.stdout
    assert not (tmp_path / "README.md").exists()  # only the first regime writes the headline
    made = tmp_path / "results/tiny-single/ours-balanced-seed0.json"
    tuned = json.loads(made.read_text())
    assert tuned["extended_from"] == str(tmp_path / "results/tiny-ours/balanced-seed0.json")
    assert tuned["method"] == "ours" and tuned["terms"] == ["hfd", "rbsd", "pbsd"]
    assert tuned["config"]["train"]["class_balance"] == 0.5  # the search's candidate
    assert tuned["weights_sha256"] == searched["weights_sha256"]
    assert [c["val"] for c in tuned["checkpoints"]] == [c["val"] for c in searched["checkpoints"]]
    assert set(tuned["checkpoints"][-1]) == {"iteration", "val", "test"}
    text = (tmp_path / "results.md").read_text()
    assert "Row `ours (balanced)`: `ours` with the setting that the validation search" in text
    score = 100 * tuned["scores"]["test"]["cnn"]["miou"]
    assert f"| ours (balanced) | 1 | {score:.2f} |" in text.split("### CNN")[1]
    assert "| ours | 0 | not run |" in text.split("### CNN")[1]
    # listed first, the same regime states the headline, tuned row included
    studies = tmp_path / "studies.yaml"
    entries = yaml.safe_load(studies.read_text())
    regimes = entries["regimes"]
    entries["regimes"] = {"tiny-single": regimes.pop("tiny-single"), **regimes}
    studies.write_text(yaml.safe_dump(entries, sort_keys=False))
    subprocess.run([*command, "--no-train"], check=True, capture_output=True, timeout=900)
    assert "| ours (balanced) | " in (tmp_path / "README.md").read_text()

    # students that are not the ones the search scored are refused, and nothing is written
    made.unlink()
    kept = tmp_path / "work/tiny-ours/balanced-seed0/vit.pt"
    kept.write_bytes((tmp_path / "work/tiny-single/independent-seed0/vit.pt").read_bytes())
    only = [*command[: command.index("--only")], "--only", "ours-balanced-seed0", "--no-tables"]
    refused = subprocess.run(only, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 1
    assert f"{kept.parent}: the kept students are not the ones" in refused.stderr
    assert not made.exists()

    # with the search's students gone the row trains: the same weights and the same result
    shutil.rmtree(kept.parent)
    trained = subprocess.run(only, check=True, capture_output=True, text=True, timeout=900)
    assert trained_keys(trained.stdout) == ["ours-balanced-seed0"]
    assert "ours-balanced-seed0: the search's students are not at hand" in trained.stdout
    direct = json.loads(made.read_text())
    assert "extended_from" not in direct
    for key in ("weights_sha256", "scores", "checkpoints", "identity"):
        assert direct[key] == tuned[key], key


def test_quality_bench_copies_a_tuned_run_that_an_ablation_row_made_instead_of_training_it(
    validated_tiny, tmp_path
):
    command = bench_command("quality.py", validated_tiny, tmp_path)
    studies = yaml.safe_load((tmp_path / "studies.yaml").read_text())
    terms = {"train.hfd": False, "train.rbsd": True, "train.pbsd": True}
    studies["searches"]["tiny-ours"]["candidates"]["hfd-off"] = terms
    regime = studies["regimes"]["tiny-single"]
    regime.update(ablation_seeds=[0], tuned=[{"search": "tiny-ours", "candidate": "hfd-off"}])
    (tmp_path / "studies.yaml").write_text(yaml.safe_dump(studies))
    command += ["--regime", "tiny-single", "--search-results", str(tmp_path / "no-search")]
    command += ["--curves-png", str(tmp_path / "curves.png")]
    command += ["--only", "ours-seed0", "ours-hfd-off-seed0", "bsd-seed0"]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    # the tuned row trains (`ours`' run has other terms); the ablation row is its copy
    assert trained_keys(done.stdout) == ["ours-hfd-off-seed0", "ours-seed0"]
    assert "bsd-seed0: the same run as ours-hfd-off-seed0.json, copied" in done.stdout
    results = tmp_path / "results/tiny-single"
    tuned = json.loads((results / "ours-hfd-off-seed0.json").read_text())
    ablation = json.loads((results / "bsd-seed0.json").read_text())
    assert ablation["borrowed_from"] == str(results / "ours-hfd-off-seed0.json")
    assert ablation["label"] == "BSD (region + pixel)" and ablation["terms"] == ["rbsd", "pbsd"]
    assert ablation["key"] == "bsd-seed0" and ablation["overrides"]["train.hfd"] is False
    assert (
        "copied with the file it came from (`borrowed_from`)"
        in (tmp_path / "results.md").read_text()
    )
    for key in ("weights_sha256", "scores", "checkpoints", "identity"):
        assert ablation[key] == tuned[key], key
    ours = json.loads((results / "ours-seed0.json").read_text())
    assert ours["weights_sha256"] != tuned["weights_sha256"]


@pytest.mark.parametrize(
    ("tuned", "base_change", "message"),
    [
        (
            [{"search": "tiny", "candidate": "missing"}],
            {},
            "no candidate 'missing' in search 'tiny'",
        ),
        ([{"search": "other", "candidate": "plain"}], {}, "no search 'other'"),
        (
            [{"search": "tiny", "candidate": "balanced"}],
            {"train.iterations": 3},
            "search 'tiny' ran another recipe than the regime: train.iterations",
        ),
        (
            [{"search": "tiny", "candidate": "balanced"}],
            {"train.method": None},
            "search 'tiny' names no train.method in its base",
        ),
        ([{"search": "tiny", "candidate": "plain"}], {}, "candidate 'plain' of 'tiny' changes"),
        (
            [{"search": "tiny", "candidate": "balanced"}] * 2,
            {},
            "independent (balanced) is listed twice",
        ),
        ([{"search": "tiny"}], {}, "{'search': 'tiny'} is not a mapping with search and"),
    ],
)
def test_quality_bench_refuses_a_tuned_row_it_cannot_trace_to_its_recipe(
    validated_tiny, tmp_path, tuned, base_change, message
):
    command = bench_command("quality.py", validated_tiny, tmp_path)
    studies = yaml.safe_load((tmp_path / "studies.yaml").read_text())
    studies["regimes"]["tiny-single"]["tuned"] = tuned
    base = {**studies["searches"]["tiny"]["base"], **base_change}
    studies["searches"]["tiny"]["base"] = {k: v for k, v in base.items() if v is not None}
    (tmp_path / "studies.yaml").write_text(yaml.safe_dump(studies))
    refused = subprocess.run(
        [*command, "--regime", "tiny-single"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1
    assert f"tuned: {message}" in refused.stderr
    assert not (tmp_path / "results.md").exists()


@pytest.mark.parametrize("shard", ["2/2", "a/b"])
def test_quality_bench_refuses_a_shard_outside_its_processes(validated_tiny, tmp_path, shard):
    command = bench_command("quality.py", validated_tiny, tmp_path)
    command += ["--regime", "tiny", f"--shard={shard}"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert f"--shard: {shard!r}" in refused.stderr
    assert not (tmp_path / "results.md").exists()


def test_search_bench_scores_candidates_on_the_validation_split_only_and_borrows_study_runs(
    validated_tiny, tmp_path
):
    quality = bench_command("quality.py", validated_tiny, tmp_path)
    quality += ["--regime", "tiny-single", "--only", "independent-seed0", "--no-tables"]
    subprocess.run(quality, check=True, capture_output=True, text=True, timeout=900)
    made = tmp_path / "results/tiny-single/independent-seed0.json"
    study_run = json.loads(made.read_text())
    command = [*bench_command("search.py", validated_tiny, tmp_path), "tiny"]
    command += ["--borrow-from", str(made.parent)]
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    # `plain` is the study's `independent` run: borrowed; `balanced` differs in one value
    assert trained_keys(result.stdout) == ["balanced-seed0"]
    assert f"plain-seed0: borrowed from {made}" in result.stdout
    table = (tmp_path / "results.md").read_text()
    names = ("plain", "balanced")
    for name in names:
        run = json.loads((tmp_path / f"results/tiny/{name}-seed0.json").read_text())
        assert set(run["scores"]) == {"val"}  # never the test split
        assert all(set(c) == {"iteration", "val"} for c in run["checkpoints"])
        row = re.search(rf"^\| {name} \| [^|]+ \| 1 \| ([\d.]+) \|.*\| ([^|]+) \|$", table, re.M)
        assert float(row.group(1)) == pytest.approx(
            100 * run["scores"]["val"]["cnn"]["miou"], abs=0.006
        )
        borrowed = name == "plain"
        assert (row.group(2).strip() == "current, 1 from the quality study") == borrowed
        assert ("borrowed_from" in run) == borrowed
    assert run["config"]["train"]["class_balance"] == 0.5
    plain = json.loads((tmp_path / "results/tiny/plain-seed0.json").read_text())
    assert plain["borrowed_from"] == str(made)
    assert plain["scores"]["val"] == study_run["scores"]["val"]
    assert plain["weights_sha256"] == study_run["weights_sha256"]
    runs = {n: json.loads((tmp_path / f"results/tiny/{n}-seed0.json").read_text()) for n in names}
    means = {
        name: statistics.fmean(100 * run["scores"]["val"][role]["miou"] for role in ("cnn", "vit"))
        for name, run in runs.items()
    }
    best = max(means, key=means.get)
    assert f"**{best}**, {means[best]:.2f}" in table
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    assert trained_keys(again.stdout) == [] and "plain-seed0: borrowed" not in again.stdout
    # a seed no candidate ran: the search chooses nothing yet
    unseen = [*command, "--no-train", "--seeds", "0", "7"]
    subprocess.run(unseen, check=True, capture_output=True, text=True, timeout=300)
    assert (
        "Choice: none yet (no candidate has a current run at every seed)."
        in (tmp_path / "results.md").read_text()
    )


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
