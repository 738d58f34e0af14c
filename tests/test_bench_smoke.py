"""The quality and search benchmarks at a tiny size: runs, resumption, tables."""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

import mlflow
import pytest
import yaml
from scipy.stats import t

from codistill.study.image_counts import read_image_counts
from codistill.study.provenance import cpu_model
from tests.conftest import REPO_ROOT, bench_module, tiny_params_file
from tests.servers.mlflow_server import mlflow_server

# The lines that say what a table's runs were made with, as a report and a bench write them.
MADE_WITH = ["- runs made on", "- runs' versions", "- numeric mode", "- weight-shaping code"]

pytestmark = pytest.mark.cost(300)


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
    assert f"- runs made on: {cpu_model()}, {os.cpu_count()} logical cores (12 runs)\n" in text
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
    # codistill study reports the same regime from the same files, training nothing
    prepared, _ = validated_tiny
    report_path = tmp_path / "report.md"
    report = [
        sys.executable,
        "-m",
        "codistill.cli",
        "study",
        "report",
        str(tmp_path / "studies.yaml"),
    ]
    report += [
        "--regime",
        "tiny",
        "--results",
        str(tmp_path / "results"),
        "--out",
        str(report_path),
    ]
    report += ["--params", command[command.index("--params") + 1], "--prepared", str(prepared)]
    subprocess.run(report, check=True, capture_output=True, text=True, timeout=900)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    title, description, made_with, body = report_path.read_text().split("\n\n", 3)
    assert title == "# CamVid: co-distillation against the baselines (regime `tiny`)"
    assert f"\n{description}\n" in text
    # what the runs were made with, in the words of the bench's table
    assert [line.split(":")[0] for line in made_with.splitlines()] == MADE_WITH
    assert f"\n{made_with}\n" in text
    body = body.splitlines()
    # the same tables; the chart is the bench's to draw, at its default path in a report
    curves = next(i for i, line in enumerate(body) if line.startswith("Learning curves"))
    assert body[curves].endswith("`docs/quality_curves-tiny.png`.")
    assert f"\n{chr(10).join(body[:curves])}\n" in text
    assert "### Ablation" in "\n".join(body) and "| ours | 2 |" in "\n".join(body)

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
    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as uri:  # a tracking URI: trained runs are tracked
        tracked = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "search"}
        result = subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=900, env=tracked
        )
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("search").experiment_id
        (parent,) = client.search_runs([experiment], filter_string="tags.study_parent = 'tiny'")
        (nested,) = client.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
    # `plain` is the study's `independent` run: borrowed; `balanced` differs in one value
    assert trained_keys(result.stdout) == ["balanced-seed0"]
    balanced = json.loads((tmp_path / "results/tiny/balanced-seed0.json").read_text())
    assert parent.info.status == "FINISHED" and nested.info.run_id == balanced["mlflow_run_id"]
    assert (nested.data.tags["study_row"], nested.data.tags["study_seed"]) == ("balanced", "0")
    assert nested.data.metrics["val_cnn_miou"] == balanced["scores"]["val"]["cnn"]["miou"]
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
    # codistill study reports the search from its files: the same table and choice
    report = [sys.executable, "-m", "codistill.cli", "study", "report"]
    report += [str(tmp_path / "studies.yaml"), "--search", "tiny", "--out", str(tmp_path / "r.md")]
    report += ["--results", str(tmp_path / "results"), "--prepared", str(validated_tiny[0])]
    report += ["--params", command[command.index("--params") + 1]]
    subprocess.run(report, check=True, capture_output=True, text=True, timeout=300)
    title, _, made_with, body = (tmp_path / "r.md").read_text().split("\n\n", 3)
    body = body.splitlines()
    assert title == "# Validation search: tiny" and body[0].startswith("| candidate |")
    assert [line.split(":")[0] for line in made_with.splitlines()] == MADE_WITH
    assert f"\n{made_with}\n" in (tmp_path / "results.md").read_text()
    assert "\n".join(body).strip() in (tmp_path / "results.md").read_text()
    # a result made otherwise never counts, and the search trains its run again (one policy)
    stale = tmp_path / "results/tiny/balanced-seed0.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "identity": "made otherwise"}))
    retrained = subprocess.run(command, check=True, capture_output=True, text=True, timeout=900)
    assert trained_keys(retrained.stdout) == ["balanced-seed0"]
    assert json.loads(stale.read_text())["identity"] == balanced["identity"]
    # a seed no candidate ran: the search chooses nothing yet
    unseen = [*command, "--no-train", "--seeds", "0", "7"]
    subprocess.run(unseen, check=True, capture_output=True, text=True, timeout=300)
    assert (
        "Choice: none yet (no candidate has a current run at every seed)."
        in (tmp_path / "results.md").read_text()
    )


def test_a_table_of_runs_names_the_machines_and_versions_they_recorded():
    def run(cpu, python="3.11.7", gpu=None, precision="float32"):
        machine = {"cpu": cpu, "cores": 2, "gpu": gpu, "python": python, "torch": "2.14.1"}
        return {"machine": machine, "precision": precision, "code_digest": "48fc0424ddd7da41"}

    runs = [run("Xeon"), run("EPYC"), run("EPYC"), run("EPYC", "3.12.1", "NVIDIA H200", "bf16")]
    lines = bench_module("environment").run_machine_lines(runs, ("torch",))
    made_on, versions, modes, code, written_on, command = lines
    assert made_on == (
        "- runs made on: EPYC, 2 logical cores (2 runs); Xeon, 2 logical cores (1 run); "
        "NVIDIA H200 (1 run)"
    )
    assert versions == (
        "- runs' versions: python 3.11.7, torch 2.14.1 (3 runs); "
        "python 3.12.1, torch 2.14.1 (1 run)"
    )
    assert modes == "- numeric mode: float32 (3 runs); bf16 (1 run)"
    assert code == "- weight-shaping code: 48fc0424ddd7 (4 runs)"
    assert written_on.startswith(f"- tables written on: {cpu_model()}, ")
    assert f", with python {platform.python_version()}, torch " in written_on
    assert command.startswith("- command: `python ")
    assert bench_module("environment").run_machine_lines([], ())[0] == "- runs made on: no runs yet"


def test_machine_check_sets_the_cpu_drift_beside_the_seed_drift(validated_tiny, tmp_path):
    from codistill.study.identity import run_identity
    from codistill.study.results import Scoring
    from codistill.study.settings import resolve_params

    prepared, _ = validated_tiny
    params = tiny_params_file(tmp_path, "independent", iterations=2)
    overrides = {"train.method": "independent"}
    scoring = Scoring(score_last=1, splits=("val",))

    def write(folder, key: str, cpu: str, points: list[float], code: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        seed = int(key[-1])
        resolved = resolve_params(params, {**overrides, "train.seed": seed})
        checkpoints = [
            {"iteration": 10 * (i + 1), "val": {"cnn": {"miou": p}, "vit": {"miou": p / 2}}}
            for i, p in enumerate(points)
        ]
        run = {
            "identity": run_identity(resolved, prepared, scoring, code=code),
            "overrides": overrides,
            "seed": seed,
            "scores": {"val": checkpoints[-1]["val"]},
            "checkpoints": checkpoints,
            "machine": {"cpu": cpu},
            "weights_sha256": {"cnn": cpu},
        }
        (folder / f"{key}.json").write_text(json.dumps(run))

    first, other = tmp_path / "first", tmp_path / "other"
    write(first, "run-seed0", "CPU A", [0.30, 0.40])
    write(first, "run-seed1", "CPU A", [0.25, 0.46])
    write(other, "run-seed0", "CPU B", [0.31, 0.38])
    command = [sys.executable, str(REPO_ROOT / "bench" / "machine_check.py")]
    command += ["--results", str(first), "--other", str(other), "--key", "run-seed0"]
    command += ["--other-seed", "run-seed1", "--out", str(tmp_path / "results.md")]
    command += ["--params", str(params), "--prepared", str(prepared)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    text = (tmp_path / "results.md").read_text()
    assert "| 20 | 40.00 | 38.00 | -2.00 | +6.00 | 20.00 | 19.00 | -1.00 | +3.00 |" in text
    assert "(CPU A: CPU A) made again as the same run" in text and "on CPU B (CPU B" in text
    assert "Bit-identical weights: no." in text
    # CNN: |+1| and |-2| against |-5| and |+6|; ViT halves them
    assert "(points): cnn 1.50 against 5.50, vit 0.75 against 2.75." in text
    write(other, "run-seed0", "CPU B", [0.31, 0.38], code="other code")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "run-seed0: the two results do not both count for the run" in refused.stderr
