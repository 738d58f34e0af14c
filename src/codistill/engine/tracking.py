"""Experiment tracking: the MLflow run a training logs to (``engine.hooks.TrackingHook``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "codistill"
# The process a RUNNING run belongs to, so that a later start can tell a run whose process
# died (killed, out of memory, the machine rebooted) from one still going.
HOST_TAG = "codistill.host"
PID_TAG = "codistill.pid"
RESUMED_FROM_TAG = "codistill.resumed_from_run"


def tracking_uri() -> str:
    """Where runs are kept: ``MLFLOW_TRACKING_URI``, else a SQLite file in the working folder."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def experiment_name() -> str:
    """The experiment new runs go to: ``MLFLOW_EXPERIMENT_NAME``, else ``codistill``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)


def mlflow_for_run(run_id: str | None) -> Any:
    """The ``mlflow`` module, set to the tracking URI and to the experiment ``run_id`` is in.

    Without a ``run_id`` (a new run) the experiment is ``experiment_name()``.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if run_id is None:
        mlflow.set_experiment(experiment_name())
    else:
        # A continued run already belongs to an experiment: make that one active.
        mlflow.set_experiment(experiment_id=mlflow.get_run(run_id).info.experiment_id)
    return mlflow


def mlflow_client() -> Any:
    """An MLflow client of ``tracking_uri()``."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run it starts or continues."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def end_abandoned_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run this host owned whose process is gone; their ids.

    A run whose owner was killed never ends itself; its next start on the same host ends it
    here (a run of another host is left to that host).
    """
    found = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = "
        f"'{socket.gethostname()}'",
        max_results=1000,
    )
    ended = []
    for run in found:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not _process_alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


class MlflowTracker:
    """One MLflow run, configured from the environment.

    Honours MLFLOW_TRACKING_URI (default ``sqlite:///mlflow.db``), MLFLOW_EXPERIMENT_NAME
    (default ``codistill``) and MLFLOW_RUN_ID (continue that run); ``resume_run_id``
    continues the run of an interrupted training. Where both name runs (a pipeline run's
    stage resuming another pipeline run's checkpoint), the stage's run is continued and
    tagged with the run it resumed from.
    """

    def __init__(
        self, run_name: str, resume_run_id: str | None = None, tags: dict[str, str] | None = None
    ) -> None:
        stage_run_id = os.environ.get("MLFLOW_RUN_ID")
        run_id = stage_run_id or resume_run_id
        tags = dict(tags or {})
        if stage_run_id and resume_run_id and resume_run_id != stage_run_id:
            tags[RESUMED_FROM_TAG] = resume_run_id
        self._mlflow = mlflow = mlflow_for_run(run_id)
        experiment = mlflow.get_experiment_by_name(experiment_name()) if run_id is None else None
        if experiment is not None:
            end_abandoned_runs(mlflow_client(), experiment.experiment_id)
        nested = mlflow.active_run() is not None
        self._run = mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else run_name,
            nested=nested,
            tags={**tags, **owner_tags()},
        )
        self.run_id = self._run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Record parameters, skipping ones this (resumed) run already holds."""
        known = self._mlflow.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in known}
        if fresh:
            self._mlflow.log_params(fresh)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record metric values at ``step``."""
        self._mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file to the run."""
        self._mlflow.log_artifact(str(path))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run."""
        self._mlflow.end_run(status=status)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys, for run parameters."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
