"""Training logs to a real MLflow server, and the values read back through its client."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from codistill.config import load_params
from codistill.engine.trainer import train_students
from tests.conftest import tiny_params_file
from tests.servers.mlflow_server import mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.cost(65)]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def test_training_run_is_logged_and_read_back(validated_tiny, tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "codistill-test")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=4, log_every=2, tracking=True))
    metrics = train_students(params, prepared, tmp_path / "run", tracking=True)

    client = MlflowClient(tracking_uri)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "codistill-test"
    assert run.data.params["train.method"] == "ours"
    assert run.data.params["distill.pbsd.rule"] == "correct_or_more_confident"
    # the numeric mode the run resolved, beside the flag that asked for it
    assert run.data.params["train.precision"] == metrics["precision"]
    history = client.get_metric_history(run.info.run_id, "loss_pbsd")
    assert [m.step for m in history] == [2, 4]
    curves = (tmp_path / "run" / "curves.csv").read_text().splitlines()
    header = curves[0].split(",")
    logged_sup = [m.value for m in client.get_metric_history(run.info.run_id, "loss_sup")]
    file_sup = [float(line.split(",")[header.index("loss_sup")]) for line in curves[1:]]
    assert logged_sup == pytest.approx(file_sup)
    for name in ("lr_cnn", "lr_vit", "images_per_s"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "train_metrics.json"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    config = json.loads(Path(local).read_text())
    assert config["train"]["iterations"] == 4


def test_mlflow_run_id_from_the_environment_is_continued(
    validated_tiny, tmp_path, tracking_uri, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("codistill-given-run")
    given = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", given)
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=2, tracking=True))
    metrics = train_students(params, prepared, tmp_path / "run", tracking=True)
    assert metrics["mlflow_run_id"] == given
    assert len(client.get_metric_history(given, "loss_total")) == 1


def test_tracking_off_logs_nothing(validated_tiny, tmp_path, tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "codistill-off")
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=2))
    metrics = train_students(params, prepared, tmp_path / "run", tracking=False)
    assert metrics["mlflow_run_id"] is None
    assert MlflowClient(tracking_uri).get_experiment_by_name("codistill-off") is None


def killed_training(validated_tiny, tmp_path, tracking_uri, experiment: str) -> tuple:
    """A tiny training tracked to ``experiment``, SIGKILLed at its first checkpoint.

    Returns its command, environment, the iteration it stopped at and the run it names.
    """
    import os

    import torch

    from tests.test_trainer import kill_at_first_checkpoint, train_command

    prepared, report = validated_tiny
    params = tiny_params_file(
        tmp_path, iterations=12, log_every=2, checkpoint_every=2, tracking=True
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "CODISTILL_PIPELINE_RUN": f"{experiment}-1",
    }
    env.pop("MLFLOW_RUN_ID", None)
    out = tmp_path / "run"
    command = train_command(params, prepared, report, out)
    kill_at_first_checkpoint(command, env, out)
    checkpoint = torch.load(out / "last.pt", weights_only=False)
    stopped_at, named = checkpoint["iteration"], checkpoint["run_id"]
    assert 0 < stopped_at < 12
    assert MlflowClient(tracking_uri).get_run(named).info.status == "RUNNING"  # nobody ended it
    return command, env, stopped_at, named


def test_a_killed_training_is_ended_and_its_resume_continues_the_same_run(
    validated_tiny, tmp_path, tracking_uri
):
    import subprocess

    command, env, stopped_at, named = killed_training(
        validated_tiny, tmp_path, tracking_uri, "codistill-killed"
    )
    out = tmp_path / "run"
    client = MlflowClient(tracking_uri)
    subprocess.run(command, env=env, check=True, timeout=300)
    experiment = client.get_experiment_by_name("codistill-killed").experiment_id
    runs = client.search_runs([experiment])
    trained = [r for r in runs if r.data.tags.get("codistill.stage") == "train"]
    assert [r.info.run_id for r in trained] == [named]  # continued, not a second run
    assert client.get_run(named).info.status == "FINISHED"
    # besides it only the pipeline run's parent, open until the last stage closes it
    (parent,) = [r for r in runs if r.info.run_id != named]
    assert parent.info.run_id == client.get_run(named).data.tags["mlflow.parentRunId"]
    steps = [m.step for m in client.get_metric_history(named, "loss_total")]
    assert min(steps) <= stopped_at < max(steps) == 12
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["mlflow_run_id"] == named


def test_a_resume_under_another_pipeline_run_is_its_stage_and_names_the_run_it_resumed(
    validated_tiny, tmp_path, tracking_uri
):
    import subprocess

    from codistill.engine.tracking import RESUMED_FROM_TAG

    command, env, stopped_at, named = killed_training(
        validated_tiny, tmp_path, tracking_uri, "codistill-moved"
    )
    # a new commit, params or data version: another pipeline run resumes the checkpoint
    subprocess.run(command, env={**env, "CODISTILL_PIPELINE_RUN": "moved-2"}, check=True)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("codistill-moved").experiment_id])
    trained = {r.info.run_id: r for r in runs if r.data.tags.get("codistill.stage") == "train"}
    assert client.get_run(named).info.status == "KILLED"  # ended at the next start
    (resumed,) = [run for run_id, run in trained.items() if run_id != named]
    assert resumed.data.tags[RESUMED_FROM_TAG] == named
    assert client.get_run(resumed.info.run_id).info.status == "FINISHED"
    assert resumed.data.tags["mlflow.parentRunId"] != trained[named].data.tags["mlflow.parentRunId"]
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "loss_total")]
    assert stopped_at < min(steps) and max(steps) == 12  # it logged only what it trained
    metrics = json.loads((tmp_path / "run" / "train_metrics.json").read_text())
    assert metrics["mlflow_run_id"] == resumed.info.run_id


def test_the_suite_tracks_into_its_own_store_and_leaves_the_workspaces_alone(
    camvid_tree, tmp_path, monkeypatch
):
    import os

    from codistill.cli import main
    from tests.conftest import REPO_ROOT, write_params

    workspace = REPO_ROOT / "mlflow.db"
    before = workspace.read_bytes() if workspace.exists() else None
    monkeypatch.chdir(REPO_ROOT)  # where a stage's default store would be
    params = write_params(tmp_path / "params.yaml", {"tracking.enabled": True})
    out = tmp_path / "prepared"
    assert (
        main(["prepare", "--params", str(params), "--data", str(camvid_tree), "--out", str(out)])
        == 0
    )
    assert (workspace.read_bytes() if workspace.exists() else None) == before
    own = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in own.search_experiments()]
    runs = own.search_runs(experiments, f"params.`path.out` = '{out.resolve()}'")
    assert [r.data.tags["mlflow.runName"] for r in runs] == ["prepare"]
