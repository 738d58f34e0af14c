"""Cluster settings of the Kubeflow tasks: credentials for every stage, GPUs for training."""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
CHECKPOINT_MOUNT = "/checkpoints"
SHM_SIZE = "16Gi"
MLFLOW_SECRET = "codistill-mlflow"
DVC_SECRET = "codistill-dvc"
# (secret, keys exposed under their own names, whether the pod may start without them)
CREDENTIALS = (
    (MLFLOW_SECRET, ("MLFLOW_TRACKING_URI",), False),
    (MLFLOW_SECRET, ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), True),
    (DVC_SECRET, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"), True),
)
RETRIES = 3


def use_credentials(task: Any) -> Any:
    """Expose the MLflow and DVC remote credentials to ``task`` as environment variables.

    The tracking URI is required (lineage must not vanish into a pod's disk); logins and the
    object-store keys are optional, for servers and remotes that need none.
    """
    from kfp import kubernetes

    for secret, names, optional in CREDENTIALS:
        kubernetes.use_secret_as_env(
            task,
            secret_name=secret,
            secret_key_to_env={name: name for name in names},
            optional=optional,
        )
    return task


def configure_gpu_training(task: Any, gpu_limit: Any, checkpoint_pvc: Any) -> Any:
    """Put ``task`` on GPU nodes with a memory-backed /dev/shm and checkpoints on a PVC.

    A retried pod mounts the same volume and resumes from its ``last.pt``.
    """
    from kfp import kubernetes

    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpu_limit)
    task.set_cpu_request("8").set_memory_request("48G").set_memory_limit("96G")
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    # DataLoader workers share batches through /dev/shm, which is 64 MiB in a default pod.
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
    )
    kubernetes.mount_pvc(task, pvc_name=checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
    task.set_retry(
        num_retries=RETRIES, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="1h"
    )
    return task
