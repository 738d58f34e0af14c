"""The compiled Kubeflow pipeline, its cluster settings and manifests, and its graph."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from codistill.cli import build_parser
from codistill.pipeline.component_entry import PARAMS_ENV
from codistill.pipeline.kfp_components import COMPONENT_IMAGE
from codistill.pipeline.kfp_tasks import CHECKPOINT_MOUNT, GPU_RESOURCE
from codistill.stages import STAGES, stage_edges
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
IMAGE_USER = 10001  # the Dockerfile's unprivileged user


@pytest.fixture(scope="module")
def compiled() -> tuple[dict, dict]:
    """The committed pipeline YAML: (pipeline spec, Kubernetes platform spec)."""
    spec, platform = yaml.safe_load_all(
        (REPO_ROOT / "pipelines/codistill_pipeline.yaml").read_text()
    )
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def task(spec: dict, name: str) -> dict:
    return spec["root"]["dag"]["tasks"][name]


def test_train_task_asks_for_gpus_from_a_pipeline_parameter(compiled):
    spec, _ = compiled
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    resources = container["resources"]
    assert resources["accelerator"]["resourceType"] == GPU_RESOURCE
    assert (
        resources["accelerator"]["resourceCount"]
        == "{{$.inputs.parameters['pipelinechannel--gpu_limit']}}"
    )
    parameters = task(spec, "train")["inputs"]["parameters"]
    assert parameters["pipelinechannel--gpu_limit"] == {"componentInputParameter": "gpu_limit"}
    # One torchrun process per GPU.
    assert parameters["nproc"] == {"componentInputParameter": "gpu_limit"}
    assert spec["root"]["inputDefinitions"]["parameters"]["gpu_limit"]["parameterType"] == (
        "NUMBER_INTEGER"
    )


def test_train_task_tolerates_gpu_nodes_and_has_shared_memory_and_a_checkpoint_volume(compiled):
    spec, executors = compiled
    train = executors["exec-train"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in train[
        "tolerations"
    ]
    shm = train["emptyDirMounts"][0]
    assert (shm["mountPath"], shm["medium"]) == ("/dev/shm", "Memory")
    pvc = train["pvcMount"][0]
    assert pvc["mountPath"] == CHECKPOINT_MOUNT
    assert pvc["pvcNameParameter"]["componentInputParameter"] == "checkpoint_pvc"
    assert task(spec, "train")["inputs"]["parameters"]["checkpoint_root"] == {
        "componentInputParameter": "checkpoint_root"
    }
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["checkpoint_root"]["defaultValue"] == CHECKPOINT_MOUNT
    assert task(spec, "train")["retryPolicy"]["maxRetryCount"] >= 1


def test_only_the_train_task_is_on_gpu_nodes(compiled):
    spec, executors = compiled
    for stage in STAGES:
        settings = executors[f"exec-{stage.name}"]
        container = spec["deploymentSpec"]["executors"][f"exec-{stage.name}"]["container"]
        on_gpu = "accelerator" in container.get("resources", {})
        assert on_gpu == ("tolerations" in settings) == stage.accelerated


def test_every_task_reads_mlflow_and_dvc_credentials_from_secrets(compiled):
    _, executors = compiled
    for stage in STAGES:
        secrets = executors[f"exec-{stage.name}"]["secretAsEnv"]
        exposed = {
            (s["secretName"], k["envVar"], s.get("optional", False))
            for s in secrets
            for k in s["keyToEnv"]
        }
        assert ("codistill-mlflow", "MLFLOW_TRACKING_URI", False) in exposed
        assert ("codistill-dvc", "AWS_ACCESS_KEY_ID", True) in exposed


def test_every_component_runs_in_the_project_image_without_installing_anything(compiled):
    spec, _ = compiled
    for stage in STAGES:
        container = spec["deploymentSpec"]["executors"][f"exec-{stage.name}"]["container"]
        assert container["image"] == COMPONENT_IMAGE
        program = " ".join(container["command"])
        assert "pip install" not in program
        assert f'run_component(\n        "{stage.name}"' in program


def test_kubeflow_graph_equals_the_dvc_graph(compiled):
    spec, _ = compiled
    kfp_edges = {
        (upstream, name)
        for name, entry in spec["root"]["dag"]["tasks"].items()
        for upstream in entry.get("dependentTasks", [])
    }
    kfp_edges = {(("data" if a == "importer" else a), b) for a, b in kfp_edges}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    dot = subprocess.run(
        [str(BIN / "dvc"), "dag", "--dot"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    dvc_edges = set(re.findall(r'"?([\w.]+)"?\s*->\s*"?([\w.]+)"?', dot))
    # Under DVC the raw data reaches prepare through data.dvc's recorded hash (dvc.yaml vars),
    # not through an edge that would let `dvc repro` re-record the data on its own.
    assert dvc_edges == stage_edges()
    assert kfp_edges == stage_edges() | {("data", "prepare")}


def _pod_templates(manifest: dict) -> dict:
    client = ApiClient()
    return {
        role: client._ApiClient__deserialize(replica["template"], "V1PodTemplateSpec")
        for role, replica in manifest["spec"]["pytorchReplicaSpecs"].items()
    }


def test_pytorchjob_manifest_is_valid_and_runs_the_train_stage_on_every_gpu():
    manifest = yaml.safe_load((REPO_ROOT / "pipelines/pytorchjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    templates = _pod_templates(manifest)
    assert set(templates) == {"Master", "Worker"}
    for template in templates.values():
        container = template.spec.containers[0]
        assert container.image == COMPONENT_IMAGE
        assert container.command[:3] == ["torchrun", "-m", "codistill.cli"]
        args = build_parser().parse_args(container.args)
        assert args.stage.name == "train" and args.profile == "gpu"
        assert container.resources.limits[GPU_RESOURCE] == manifest["spec"]["nprocPerNode"]
        mounts = {m.name: m.mount_path for m in container.volume_mounts}
        volumes = {v.name: v for v in template.spec.volumes}
        assert set(mounts) <= set(volumes)
        assert str(args.checkpoint_dir).startswith(mounts["checkpoints"])
        assert volumes["dshm"].empty_dir.medium == "Memory" and mounts["dshm"] == "/dev/shm"
        security = template.spec.security_context
        assert security.run_as_non_root and security.run_as_user == IMAGE_USER
        assert security.fs_group == IMAGE_USER  # the volumes are writable by the image's user


def test_a_broken_pod_template_is_rejected_by_the_kubernetes_models():
    manifest = yaml.safe_load((REPO_ROOT / "pipelines/pytorchjob.yaml").read_text())
    del manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
        "name"
    ]
    with pytest.raises(ValueError, match="name"):
        _pod_templates(manifest)


def test_dockerfile_builds_the_package_on_cuda_torch_without_the_dataset():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base
    # the pipeline's libraries and one ONNX Runtime build, not the local server
    assert re.search(r'^RUN pip install --no-cache-dir "\.\[pipeline,cpu\]"', dockerfile, re.M)
    copied = " ".join(re.findall(r"^COPY (.+)$", dockerfile, re.M))
    assert "data " not in copied + " " and "build" not in copied
    assert f"{PARAMS_ENV}=/opt/codistill/params.yaml" in dockerfile
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {"data", "build", ".venv"} <= set(ignored)
    tag = re.search(r"-t (\S+) \.", dockerfile).group(1)
    assert tag == COMPONENT_IMAGE
    # the last USER wins: the components run as the unprivileged user, not root
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] == f"{IMAGE_USER}:{IMAGE_USER}"
    assert f"useradd --uid {IMAGE_USER}" in dockerfile
    assert "chown codistill:codistill /gcs /minio /s3" in dockerfile
