"""The whole Kubeflow pipeline run locally, with its lineage in a real MLflow server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from codistill.lineage.runs import KEY_TAG, PARENT_TAG, STAGE_TAG, data_hash
from codistill.stages import STAGES
from codistill.stages.runner import run_stage
from tests.conftest import REPO_ROOT, TRAIN_SIZE, build_camvid_tree, over_repo, tiny_params_file
from tests.servers.mlflow_server import mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.cost(70)]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tracking_uri) -> dict:
    """One `codistill pipeline run --local` on a tiny tree, tracked by the real server."""
    base = tmp_path_factory.mktemp("kfp-local")
    tree = build_camvid_tree(base / "camvid", size=TRAIN_SIZE)
    params = tiny_params_file(base, iterations=4, tracking=True, min_miou_points=0.0)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": "kfp-local",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("CODISTILL_PIPELINE_RUN", None)
    command = [sys.executable, "-m", "codistill.cli", "pipeline", "run", "--local"]
    command += ["--raw-data", str(tree), "--params", str(params), "--workspace", str(base / "ws")]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    artifacts = dict(
        line.strip().split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith("  ") and line.strip().split(":")[0] in {s.name for s in STAGES}
    )
    return {"artifacts": {k: Path(v) for k, v in artifacts.items()}, "stdout": result.stdout}


def test_every_stage_leaves_its_artifact(local_run):
    found = local_run["artifacts"]
    assert set(found) == {s.name for s in STAGES}
    assert (found["prepare"] / "manifest.csv").is_file()
    assert json.loads((found["validate"] / "validation.json").read_text())["passed"]
    for role in ("cnn", "vit"):
        assert torch.load(found["train"] / f"{role}.pt", weights_only=True)
    metrics = json.loads((found["evaluate"] / "metrics.json").read_text())
    assert 0 <= metrics["cnn"]["miou"] <= 1 and 0 <= metrics["vit"]["miou"] <= 1
    parity = json.loads((found["export"] / "parity.json").read_text())
    assert all(case["passed"] for cases in parity["cases"].values() for case in cases)
    variants = json.loads((found["export"] / "variants.json").read_text())["students"]
    kept = {r: [v for v in ("int8", "fp16") if variants[r][v]["kept"]] for r in variants}
    assert {p.name for p in found["export"].glob("*.onnx")} == {"cnn.onnx", "vit.onnx"} | {
        f"{r}.{v}.onnx" for r, vs in kept.items() for v in vs
    }
    release = json.loads((found["publish"] / "release.json").read_text())
    assert set(release["students"]) == {"cnn", "vit"}
    for role in ("cnn", "vit"):
        served = found["publish"] / f"codistill_{role}"
        for variant in [None, *kept[role]]:
            suffix = "" if variant is None else f".{variant}"
            assert (served / "1" / f"model{suffix}.onnx").read_bytes() == (
                found["export"] / f"{role}{suffix}.onnx"
            ).read_bytes()
        extra = {"int8": "cpu-int8", "fp16": "gpu-fp16"}
        assert release["students"][role]["configs"] == sorted(
            ["cpu", "gpu", *(extra[v] for v in kept[role])]
        )
        assert f'name: "codistill_{role}"' in (served / "config.pbtxt").read_text()


def test_one_parent_run_with_a_nested_run_per_stage(local_run, tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("kfp-local")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    key = parent.data.tags[KEY_TAG]
    assert key and "{{" not in key  # the Kubeflow job id, resolved
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert sorted(r.data.tags[STAGE_TAG] for r in children) == sorted(s.name for s in STAGES)
    assert all(r.info.status == "FINISHED" for r in children)
    assert parent.data.params["lineage.data_md5"] == data_hash(REPO_ROOT)
    assert parent.data.params["lineage.data_md5"].endswith(".dir")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert parent.data.params["lineage.git_commit"].startswith(commit)
    assert parent.data.params["train.iterations"] == "4"
    train = next(r for r in children if r.data.tags[STAGE_TAG] == "train")
    assert "loss_total" in train.data.metrics  # the trainer logged into the stage's run
    evaluate = next(r for r in children if r.data.tags[STAGE_TAG] == "evaluate")
    assert set(evaluate.data.metrics) >= {"cnn.miou", "vit.miou"}


def test_both_students_are_registered_with_their_onnx_graphs(
    local_run, tracking_uri, tmp_path, monkeypatch
):
    import mlflow
    import onnx

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    for role in ("cnn", "vit"):
        folder = mlflow.artifacts.download_artifacts(
            f"models:/codistill-{role}@candidate", dst_path=str(tmp_path / role)
        )
        graph = onnx.load(str(Path(folder) / "model.onnx")).graph
        assert [i.name for i in graph.input] == ["image"]
        assert [o.name for o in graph.output] == ["logits", "labels"]


def publish(tmp_path: Path, miou: dict[str, float], min_points: float) -> dict:
    evaluation = tmp_path / "eval"
    evaluation.mkdir(exist_ok=True)
    (evaluation / "metrics.json").write_text(
        json.dumps({"split": "test", **{r: {"miou": v} for r, v in miou.items()}})
    )
    raw = over_repo({"gates": {"min_miou_points": min_points}, "tracking": {"enabled": True}})
    return run_stage(
        "publish",
        raw,
        {"evaluation": evaluation, "onnx": tmp_path / "onnx", "out": tmp_path / "release"},
        pipeline_run=f"publish-{tmp_path.name}",
    )


def test_publish_promotes_only_students_that_clear_the_gate(
    tmp_path, exported_students, tracking_uri, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "publish-gate")
    (tmp_path / "onnx").symlink_to(exported_students)
    client = MlflowClient(tracking_uri)

    def candidate(role: str) -> str | None:
        try:
            return client.get_model_version_by_alias(f"codistill-{role}", "candidate").version
        except MlflowException:
            return None

    before = {role: candidate(role) for role in ("cnn", "vit")}
    publish(tmp_path, {"cnn": 0.61, "vit": 0.42}, min_points=50.0)
    release = json.loads((tmp_path / "release" / "release.json").read_text())
    cnn, vit = release["students"]["cnn"], release["students"]["vit"]
    assert cnn["passed"] and cnn["alias"] == "candidate" and candidate("cnn") == cnn["version"]
    assert not vit["passed"] and vit["alias"] is None and vit["version"]
    assert candidate("vit") == before["vit"]  # a failing student does not take the alias

    publish(tmp_path, {"cnn": 0.49, "vit": 0.42}, min_points=50.0)
    again = json.loads((tmp_path / "release" / "release.json").read_text())
    assert int(again["students"]["cnn"]["version"]) == int(cnn["version"]) + 1
    assert candidate("cnn") == cnn["version"]  # the alias stays on the version that passed


def test_publish_without_evaluation_metrics_names_the_missing_file(tmp_path, exported_students):
    raw = over_repo({"tracking": {"enabled": False}})
    with pytest.raises(FileNotFoundError, match=r"eval/metrics\.json: no evaluation metrics"):
        run_stage(
            "publish",
            raw,
            {
                "evaluation": tmp_path / "eval",
                "onnx": exported_students,
                "out": tmp_path / "release",
            },
        )
    assert not (tmp_path / "release").exists()


def test_publish_without_the_preprocessing_contract_names_it_and_keeps_the_release(
    tmp_path, exported_students
):
    import shutil

    onnx_dir = Path(shutil.copytree(exported_students, tmp_path / "onnx"))
    (onnx_dir / "preprocessing.json").unlink()
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    metrics = {"split": "test", "cnn": {"miou": 0.6}, "vit": {"miou": 0.6}}
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "release.json").write_text("{}")  # a previous release
    raw = over_repo({"tracking": {"enabled": False}})
    paths = {"evaluation": evaluation, "onnx": onnx_dir, "out": tmp_path / "release"}
    with pytest.raises(FileNotFoundError, match=r"onnx/preprocessing\.json: missing"):
        run_stage("publish", raw, paths)
    assert [p.name for p in (tmp_path / "release").iterdir()] == ["release.json"]
    assert (tmp_path / "release" / "release.json").read_text() == "{}"
