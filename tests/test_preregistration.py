"""The pre-registration gate: no test split is read under a missing, uncommitted or edited plan."""

import pytest

from codistill.study.preregistration import (
    BLOB_KEY,
    PreregistrationError,
    committed_blob,
    require_unchanged_plan,
)
from tests.conftest import git


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
