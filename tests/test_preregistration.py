"""The pre-registration gate: no test split is read under a missing, uncommitted or edited plan."""

import argparse
import subprocess
import sys

import pytest

from codistill.artifacts import write_json_atomic
from codistill.study.preregistration import (
    BLOB_KEY,
    PreregistrationError,
    committed_blob,
    require_unchanged_plan,
)
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from codistill.study.results import Scoring
from quality import preregistration_stamp, train_missing


def git(folder, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "plans").mkdir()
    return tmp_path


def commit(repo, plan, text):
    plan.write_text(text)
    git(repo, "add", str(plan.relative_to(repo)))
    git(repo, "commit", "-q", "-m", "plan")
    return git(repo, "rev-parse", f"HEAD:{plan.relative_to(repo)}")


def test_a_missing_or_uncommitted_plan_is_refused(repo):
    plan = repo / "plans" / "confirm.yaml"
    with pytest.raises(PreregistrationError, match="no pre-registration file"):
        committed_blob(plan)
    plan.write_text("seeds: [5, 6, 7, 8, 9]\n")
    with pytest.raises(PreregistrationError, match="not committed"):
        committed_blob(plan)


def test_a_plan_edited_after_its_commit_is_refused(repo):
    plan = repo / "plans" / "confirm.yaml"
    blob = commit(repo, plan, "seeds: [5, 6, 7, 8, 9]\n")
    assert committed_blob(plan) == blob
    plan.write_text("seeds: [5, 6, 7]\n")
    with pytest.raises(PreregistrationError, match="differs from its committed version"):
        committed_blob(plan)


def test_a_plan_changed_since_the_first_test_result_is_refused(repo):
    plan = repo / "plans" / "confirm.yaml"
    first = commit(repo, plan, "seeds: [5, 6, 7, 8, 9]\n")
    scored = {"key": "ours-seed5", "scores": {"test": {}, "val": {}}, BLOB_KEY: first}
    validation_only = {"key": "dml-seed5", "scores": {"val": {}}}
    assert require_unchanged_plan(plan, [scored, validation_only]) == first
    second = commit(repo, plan, "seeds: [5, 6, 7]\n")  # committed, but after a test result
    assert second != first
    with pytest.raises(PreregistrationError, match="changed since the regime's first test"):
        require_unchanged_plan(plan, [scored])
    assert require_unchanged_plan(plan, [validation_only]) == second
    unregistered = {"key": "kdcl-seed5", "scores": {"test": {}}}
    with pytest.raises(PreregistrationError, match="without a pre-registration"):
        require_unchanged_plan(plan, [unregistered])


def test_the_quality_bench_checks_the_plan_before_it_trains_anything(repo, tmp_path):
    regime_dir = tmp_path / "results" / "confirm"
    plan = repo / "plans" / "confirm.yaml"
    args = argparse.Namespace(
        only=None, prepared=tmp_path / "absent", validation=tmp_path / "absent"
    )
    regime = {"preregistration": str(plan)}
    # the gate fires before the data check, so nothing is trained or scored
    with pytest.raises(SystemExit, match=r"regime confirm: .*no pre-registration file"):
        train_missing(args, "confirm", regime, [], Scoring(), regime_dir)
    blob = commit(repo, plan, "seeds: [5]\n")
    assert preregistration_stamp(regime, regime_dir) == {BLOB_KEY: blob}
    write_json_atomic(regime_dir / "ours-seed5.json", {"key": "ours-seed5", "scores": {"test": {}}})
    with pytest.raises(SystemExit, match="without a pre-registration"):
        preregistration_stamp(regime, regime_dir)
    assert preregistration_stamp({}, regime_dir) == {}
