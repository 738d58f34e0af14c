"""MLflow lineage: which parent a stage joins, and what a failure leaves behind."""

import pytest
from mlflow.tracking import MlflowClient

from codistill.config import parse_params
from codistill.lineage.runs import (
    KEY_TAG,
    PARENT_TAG,
    PIPELINE_RUN_ENV,
    data_hash,
    pipeline_key,
    stage_run,
)
from codistill.stages.runner import run_stage
from tests.conftest import REPO_ROOT, over_repo


@pytest.fixture
def sqlite_tracking(tmp_path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lineage")
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    return MlflowClient(uri)


def runs(client: MlflowClient) -> list:
    return client.search_runs([client.get_experiment_by_name("lineage").experiment_id])


def test_the_key_is_explicit_or_from_the_environment_or_a_digest(monkeypatch):
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    ours = pipeline_key({"train": {"method": "ours"}}, "abc.dir", "1234", None)
    assert ours == pipeline_key({"train": {"method": "ours"}}, "abc.dir", "1234", None)
    assert ours.startswith("dvc-")
    assert ours != pipeline_key({"train": {"method": "dml"}}, "abc.dir", "1234", None)
    assert ours != pipeline_key({"train": {"method": "ours"}}, "def.dir", "1234", None)
    assert ours != pipeline_key({"train": {"method": "ours"}}, "abc.dir", "5678", None)
    monkeypatch.setenv(PIPELINE_RUN_ENV, "nightly-7")
    assert pipeline_key({}, "abc.dir", "1234", None) == "nightly-7"
    assert pipeline_key({}, "abc.dir", "1234", "job-42") == "job-42"


def test_data_hash_is_the_md5_that_data_dvc_records(tmp_path):
    assert data_hash(REPO_ROOT) in (REPO_ROOT / "data.dvc").read_text()
    assert data_hash(tmp_path) == "unknown"


def test_stages_of_one_configuration_share_a_parent_until_the_last_closes_it(sqlite_tracking):
    raw = {"train": {"method": "ours"}}
    params = parse_params(over_repo(raw), "test")
    with stage_run(params, raw, "prepare", None, last=False) as first:
        pass
    with stage_run(params, raw, "train", None, last=True) as second:
        pass
    assert first.parent_id == second.parent_id
    parent = sqlite_tracking.get_run(first.parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.method"] == "ours"
    with stage_run(params, raw, "prepare", None, last=False) as third:
        pass
    assert third.parent_id != first.parent_id  # a finished pipeline run is not reopened
    assert {r.data.tags[KEY_TAG] for r in runs(sqlite_tracking)} == {parent.data.tags[KEY_TAG]}


def test_a_failing_stage_marks_its_run_and_the_parent_failed(sqlite_tracking, tmp_path):
    raw = over_repo({"tracking": {"enabled": True}})
    paths = {"evaluation": tmp_path / "eval", "onnx": tmp_path, "out": tmp_path / "release"}
    with pytest.raises(FileNotFoundError, match="no evaluation metrics"):
        run_stage("publish", raw, paths, pipeline_run="broken-1")
    found = runs(sqlite_tracking)
    assert len(found) == 2
    assert {r.info.status for r in found} == {"FAILED"}
    stage = next(r for r in found if PARENT_TAG in r.data.tags)
    assert stage.data.tags["codistill.stage"] == "publish"


def test_a_retried_stage_rejoins_its_failed_parent(sqlite_tracking):
    raw = {"train": {"method": "ours"}}
    params = parse_params(over_repo(raw), "test")
    with stage_run(params, raw, "prepare", "job-9", last=False) as prepare:
        pass
    with pytest.raises(RuntimeError), stage_run(params, raw, "train", "job-9", last=False):
        raise RuntimeError("pod evicted")
    assert sqlite_tracking.get_run(prepare.parent_id).info.status == "FAILED"
    with stage_run(params, raw, "train", "job-9", last=True) as retried:
        pass
    assert retried.parent_id == prepare.parent_id
    assert sqlite_tracking.get_run(prepare.parent_id).info.status == "FINISHED"


def test_a_run_whose_process_died_is_marked_killed_at_the_next_start(sqlite_tracking):
    import os
    import socket
    import subprocess

    from codistill.engine.tracking import HOST_TAG, PID_TAG
    from codistill.lineage.runs import STAGE_TAG

    raw = {"train": {"method": "ours"}}
    params = parse_params(over_repo(raw), "test")
    with stage_run(params, raw, "prepare", "job-1", last=False) as prepare:
        pass
    gone = subprocess.Popen(["true"])
    gone.wait()
    experiment = sqlite_tracking.get_experiment_by_name("lineage").experiment_id
    host = socket.gethostname()

    def running(tags: dict) -> str:
        return sqlite_tracking.create_run(experiment, tags=tags).info.run_id

    lineage = {PARENT_TAG: prepare.parent_id, STAGE_TAG: "train", KEY_TAG: "job-1"}
    orphan = running({**lineage, HOST_TAG: host, PID_TAG: str(gone.pid)})
    alive = running({HOST_TAG: host, PID_TAG: str(os.getpid())})
    elsewhere = running({HOST_TAG: "another-host", PID_TAG: str(gone.pid)})
    with stage_run(params, raw, "prepare", "job-2", last=True):
        pass

    def status(run_id: str) -> str:
        return sqlite_tracking.get_run(run_id).info.status

    assert status(orphan) == status(prepare.parent_id) == "KILLED"
    assert status(alive) == status(elsewhere) == "RUNNING"
    # the killed stage, run again in its pipeline run, continues the run it opened
    with stage_run(params, raw, "train", "job-1", last=True) as again:
        assert again.run_id == orphan and again.parent_id == prepare.parent_id
        assert sqlite_tracking.get_run(orphan).data.tags[PID_TAG] == str(os.getpid())
    assert status(orphan) == status(prepare.parent_id) == "FINISHED"
