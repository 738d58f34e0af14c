"""Real DVC commands on the real CamVid remote, in a copy of this repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, SHARED

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (SHARED / "dvc-remote").is_dir(), reason="no shared DVC remote"),
    pytest.mark.cost(210),
]

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def copy_repository(base: Path) -> Path:
    """Copy the repository's files into ``base/project`` beside a link to shared/, as a git repo."""
    (base / "shared").symlink_to(SHARED)
    files = run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO_ROOT
    ).stdout.split()
    root = base / "project"
    for name in files:
        if (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    run(["git", "init", "-q"], root)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository, to pull the real CamVid into."""
    return copy_repository(tmp_path_factory.mktemp("clone"))


def test_committed_data_dvc_is_the_shared_one():
    assert (REPO_ROOT / "data.dvc").read_text() == (SHARED / "datasets" / "data.dvc").read_text()
    config = (REPO_ROOT / ".dvc" / "config").read_text()
    assert "remote = shared" in config and "url = ../../shared/dvc-remote" in config


def test_dvc_pull_restores_camvid(project):
    run([str(BIN / "dvc"), "pull", "-q", "data.dvc"], project)
    camvid = project / "data" / "camvid"
    counts = {d.name: len(list(d.glob("*.png"))) for d in sorted(camvid.iterdir())}
    assert counts == {
        "test": 233,
        "testannot": 233,
        "train": 367,
        "trainannot": 367,
        "val": 101,
        "valannot": 101,
    }
    assert "up to date" in run([str(BIN / "dvc"), "status", "data.dvc"], project).stdout.lower()


def test_dvc_repro_to_validate_prepares_and_validates_real_camvid(project):
    run([str(BIN / "dvc"), "repro", "validate"], project)
    report = json.loads((project / "build/validate/validation.json").read_text())
    assert report["passed"] and report["samples"] == 701
    prepared = project / "build/prepared/camvid"
    assert sum(p.stat().st_size for p in prepared.iterdir()) <= 64 * 2**20
    again = run([str(BIN / "dvc"), "repro", "validate"], project)
    assert "didn't change" in again.stdout or "up to date" in again.stdout.lower()


def results_that_do_not_count(project: Path) -> dict[str, list[str]]:
    """Per regime and search of the studies file, the committed results with another identity."""
    from codistill.study import regimes, searches
    from codistill.study.regime_report import resolved_regime
    from codistill.study.results import Scoring, read_result
    from codistill.study.settings import load_studies

    studies_file, prepared = project / "bench/studies.yaml", project / "build/prepared/camvid"
    quality, searched = project / "bench/results/quality", project / "bench/results/search"
    found = {}
    for name in load_studies(studies_file)["regimes"]:
        name, regime = resolved_regime(studies_file, name, {})
        files = regimes.RegimeFiles(params=project / "params.yaml", prepared=prepared)
        runs = regimes.plan(regime, ablations=True)
        scoring = Scoring(score_last=regime.get("score_last", 1))
        found[name] = regimes.collect(files, quality / name, runs, scoring)[1]
    for name, search in load_studies(studies_file)["searches"].items():
        folder = searched / name
        files = searches.SearchFiles(
            project / "params.yaml", prepared, Path(), Path(), folder, quality
        )
        seeds = sorted({read_result(path)["seed"] for path in folder.glob("*.json")})
        results, current = searches.collect(search, seeds, files)
        found[name] = sorted({r["key"] for runs in results.values() for r in runs} - current)
    return found


def test_every_committed_study_result_still_counts_for_its_run(project):
    """The code, identity and digest changes since each result were all shown to train alike.

    Results made before results had identities, and bf16 ones on a CPU that cannot train in
    bf16, are the only ones left out.
    """
    from codistill.engine.precision import resolve_precision
    from codistill.study.provenance import study_device
    from codistill.study.results import read_result

    run([str(BIN / "dvc"), "repro", "prepare"], project)  # the manifest the identities hold
    bf16_here = resolve_precision(True, study_device()).mode != "float32"
    left_out = {}
    for study, keys in results_that_do_not_count(project).items():
        for key in keys:
            folder = "search" if (project / "bench/results/search" / study).is_dir() else "quality"
            result = read_result(project / "bench/results" / folder / study / f"{key}.json")
            exempt = "identity" not in result or (
                result["precision"] != "float32" and not bf16_here
            )
            if not exempt:
                left_out.setdefault(study, []).append(key)
    assert left_out == {}


def test_an_unrecorded_bad_label_changes_no_recorded_version_and_is_named(project):
    mask = project / "data/camvid/valannot/0016E5_07959.png"
    good = mask.read_bytes()
    labels = np.asarray(Image.open(mask)).copy()
    labels[:10, :10] = 200
    Image.fromarray(labels).save(mask)
    recorded = {name: (project / name).read_bytes() for name in ("data.dvc", "dvc.lock")}
    # the pipeline stays at the recorded version; dvc status shows the edit
    assert stages_run(run([str(BIN / "dvc"), "repro", "validate"], project).stdout) == set()
    assert (
        "modified:           data" in run([str(BIN / "dvc"), "status", "data.dvc"], project).stdout
    )
    # prepare, made to run, refuses the unrecorded edit and names it
    result = run([str(BIN / "dvc"), "repro", "-f", "validate"], project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "modified data/camvid/valannot/0016E5_07959.png" in output
    assert {name: (project / name).read_bytes() for name in recorded} == recorded
    # the recorded data comes back, as the error says
    run([str(BIN / "dvc"), "checkout", "--force", "data.dvc"], project)
    assert mask.read_bytes() == good
    for targets in (["data.dvc"], ["validate", "--with-deps"]):
        status = run([str(BIN / "dvc"), "status", *targets], project).stdout
        assert "up to date" in status.lower(), status


def test_a_recorded_bad_label_reaches_the_gate_which_names_the_sample(project):
    mask = project / "data/camvid/valannot/0016E5_07959.png"
    labels = np.asarray(Image.open(mask)).copy()
    labels[:10, :10] = 200
    Image.fromarray(labels).save(mask)
    run([str(BIN / "dvc"), "add", "-q", "data"], project)
    lock_before = (project / "dvc.lock").read_text()
    result = run([str(BIN / "dvc"), "repro", "validate"], project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Running stage 'prepare'" in output  # the new recorded version reran it
    assert "[FAIL] label_values_valid" in output
    assert "val/0016E5_07959: invalid raw values 200 in 100 pixels" in output
    lock = (project / "dvc.lock").read_text()
    validate_lock = lock[lock.index("  validate:") :]
    assert validate_lock == lock_before[lock_before.index("  validate:") :]


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository whose data/camvid is a tiny tree and params a tiny run."""
    import yaml

    from codistill.config import with_overrides
    from tests.conftest import TINY_TRAIN, TRAIN_SIZE, build_camvid_tree

    root = copy_repository(tmp_path_factory.mktemp("tiny-clone"))
    build_camvid_tree(root / "data" / "camvid", size=TRAIN_SIZE)
    run([str(BIN / "dvc"), "add", "-q", "data"], root)  # the tiny tree is this copy's version
    tiny = {
        **TINY_TRAIN,
        "train.iterations": 4,
        "train.log_every": 2,
        "train.checkpoint_every": 2,
        "train.scale": [1.0, 1.0],  # the tiny images are already smaller than CamVid's
        "tracking.enabled": False,
    }
    params = with_overrides(yaml.safe_load((root / "params.yaml").read_text()), tiny)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_dvc_repro_runs_every_stage_and_reports_metrics_and_plots(tiny_project):
    run([str(BIN / "dvc"), "repro"], tiny_project)
    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], tiny_project).stdout)
    metrics = next(iter(shown.values()))["data"]["build/eval/metrics.json"]["data"]
    assert set(metrics) == {"split", "cnn", "vit"}
    assert 0 <= metrics["cnn"]["miou"] <= 1 and 0 <= metrics["vit"]["miou"] <= 1
    plots = run([str(BIN / "dvc"), "plots", "show", "--json"], tiny_project).stdout
    for name in ("training_loss", "distillation_terms", "per_class_iou_cnn", "per_class_iou_vit"):
        assert name in plots
    assert "could not find provided field" not in plots
    status = run([str(BIN / "dvc"), "status"], tiny_project).stdout
    assert "up to date" in status.lower()
    parity = json.loads((tiny_project / "build/export/parity.json").read_text())
    assert all(case["passed"] for cases in parity["cases"].values() for case in cases)
    release = json.loads((tiny_project / "serving/model_repository/release.json").read_text())
    assert set(release["students"]) == {"cnn", "vit"}


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '(\w+)'", output))


def git(args: list[str], cwd: Path) -> None:
    run(["git", "-c", "user.email=tests@codistill", "-c", "user.name=tests", *args], cwd)


def test_a_second_repro_runs_nothing(tiny_project):
    run([str(BIN / "dvc"), "repro"], tiny_project)
    again = run([str(BIN / "dvc"), "repro"], tiny_project).stdout
    assert stages_run(again) == set()
    assert "up to date" in again.lower()
    # how often a run logs is no reason to retrain; how long it trains is
    params = tiny_project / "params.yaml"
    good = params.read_text()
    assert "  log_every: 2\n" in good and "  iterations: 4\n" in good
    try:
        params.write_text(good.replace("  log_every: 2\n", "  log_every: 1\n"))
        logged = run([str(BIN / "dvc"), "status", "--json"], tiny_project).stdout
        params.write_text(good.replace("  iterations: 4\n", "  iterations: 5\n"))
        longer = json.loads(run([str(BIN / "dvc"), "status", "--json"], tiny_project).stdout)
    finally:
        params.write_text(good)
    # only the one-second check of the whole file, which retrains nothing
    assert set(json.loads(logged)) == {"params"}
    assert set(longer) == {"params", "train"}
    assert longer["train"] == [{"changed deps": {"params.yaml": {"train.iterations": "modified"}}}]


def stale_after(root: Path, name: str, edit) -> set[str]:
    """The stages `dvc status` calls changed once ``edit`` has rewritten the file ``name``."""
    path = root / name
    original = path.read_text()
    edited = edit(original)
    assert edited != original, f"the edit changed nothing in {name}"
    path.write_text(edited)
    try:
        return set(json.loads(run([str(BIN / "dvc"), "status", "--json"], root).stdout))
    finally:
        path.write_text(original)


def test_a_tool_or_serving_edit_retrains_nothing_and_a_term_edit_retrains(tiny_project):
    run([str(BIN / "dvc"), "repro"], tiny_project)
    training = {"prepare", "validate", "train", "evaluate"}
    loadtest_help = "Closed-loop load on the local Triton endpoint"
    tools = {
        "src/codistill/cli.py": lambda text: text.replace(loadtest_help, "Load the endpoint"),
        "src/codistill/serving/front.py": lambda text: text + "# an edit\n",
        "src/codistill/serving/loadtest.py": lambda text: text + "# an edit\n",
    }
    for name, edit in tools.items():
        assert not stale_after(tiny_project, name, edit) & training, name
    term = stale_after(tiny_project, "src/codistill/distill/pixel_bsd.py", lambda t: t + "# x\n")
    assert term == {"train"}  # the stages after it follow when train re-runs


def test_a_misspelled_key_fails_repro_in_one_line_and_reruns_no_stage(tiny_project):
    run([str(BIN / "dvc"), "repro"], tiny_project)
    before = output_digests(tiny_project)
    params = tiny_project / "params.yaml"
    good = params.read_text()
    assert "  batch_size: " in good
    params.write_text(good.replace("train:\n", "train:\n  batch_szie: 8\n", 1))
    try:
        failed = run([str(BIN / "dvc"), "repro"], tiny_project, check=False)
    finally:
        params.write_text(good)
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    named = [line for line in output.splitlines() if "batch_szie" in line]
    assert named[0].startswith(
        "codistill pipeline: error: params.yaml: unknown key train.batch_szie"
    )
    assert stages_run(output) == {"params"}
    assert output_digests(tiny_project) == before
    # the file as it was: nothing to do
    assert stages_run(run([str(BIN / "dvc"), "repro"], tiny_project).stdout) == set()


def output_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file the stages wrote."""
    import hashlib

    files = [p for d in ("build", "serving") for p in (root / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_broken_params_yaml_leaves_every_previous_output_in_place(tiny_project):
    run([str(BIN / "dvc"), "repro"], tiny_project)
    before = output_digests(tiny_project)
    assert "build/train/curves.csv" in before and "build/train/cnn.pt" in before
    import yaml

    params = tiny_project / "params.yaml"
    good = params.read_text()
    broken = yaml.safe_load(good)
    broken["train"]["iterations"] = "ten"
    params.write_text(yaml.safe_dump(broken, sort_keys=False))
    try:
        failed = run([str(BIN / "dvc"), "repro"], tiny_project, check=False)
    finally:
        params.write_text(good)
    assert failed.returncode != 0
    assert "train.iterations: expected an integer, got 'ten'" in failed.stdout + failed.stderr
    assert output_digests(tiny_project) == before
    assert "up to date" in run([str(BIN / "dvc"), "status"], tiny_project).stdout.lower()


def test_exp_run_of_another_method_reruns_only_train_and_what_follows_and_diffs(tiny_project):
    git(["add", "-A"], tiny_project)
    git(["commit", "-qm", "tiny run of ours"], tiny_project)
    exp = run([str(BIN / "dvc"), "exp", "run", "-S", "train.method=dml"], tiny_project).stdout
    assert stages_run(exp) == {"params", "train", "evaluate", "export", "publish"}
    trained = json.loads((tiny_project / "build/train/train_metrics.json").read_text())
    assert trained["method"] == "dml"
    params = json.loads(run([str(BIN / "dvc"), "params", "diff", "--json"], tiny_project).stdout)
    assert params["params.yaml"]["train.method"] == {"old": "ours", "new": "dml"}
    metrics = json.loads(
        run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], tiny_project).stdout
    )["build/eval/metrics.json"]
    committed = json.loads(
        run(["git", "show", "HEAD:build/eval/metrics.json"], tiny_project).stdout
    )
    current = json.loads((tiny_project / "build/eval/metrics.json").read_text())
    for role in ("cnn", "vit"):
        assert metrics[f"{role}.miou"]["old"] == committed[role]["miou"]
        assert metrics[f"{role}.miou"]["new"] == current[role]["miou"]
    plots = json.loads(
        run([str(BIN / "dvc"), "plots", "diff", "HEAD", "--json"], tiny_project).stdout
    )
    # Only the overlay picture (about 2 MB on CamVid) stays out of git, so HEAD has none.
    missing = {e["name"] for e in plots.get("errors", [])}
    assert missing <= {"build/eval/overlays.png"}, plots["errors"]
    for name in ("training_loss", "distillation_terms", "per_class_iou_cnn"):
        assert set(plots["data"][name][0]["revisions"]) == {"HEAD", "workspace"}
