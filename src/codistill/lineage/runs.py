"""MLflow lineage: one parent run per pipeline run, one nested run per stage.

The parent is found by a pipeline-run key: the Kubeflow job id, ``CODISTILL_PIPELINE_RUN``,
or, under a plain ``dvc repro``, a digest of the parameters, the data hash and the git
commit. It carries the data hash, the commit and the parameters; the last stage closes it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from codistill.config import Params
from codistill.engine.tracking import (
    end_abandoned_runs,
    experiment_name,
    flatten,
    mlflow_client,
    owner_tags,
)
from codistill.stage_result import StageSummary

PIPELINE_RUN_ENV = "CODISTILL_PIPELINE_RUN"
HOME_ENV = "CODISTILL_HOME"
GIT_COMMIT_ENV = "CODISTILL_GIT_COMMIT"
KEY_TAG = "codistill.pipeline_run"
STAGE_TAG = "codistill.stage"
PARENT_TAG = "mlflow.parentRunId"
GIT_TAG = "mlflow.source.git.commit"
BATCH = 100  # MLflow takes at most this many parameters per request
EXCLUDED = (":!dvc.lock", ":!build")


def project_home() -> Path:
    """Where data.dvc and the git checkout are: ``$CODISTILL_HOME`` or the working folder."""
    return Path(os.environ.get(HOME_ENV, "."))


def data_hash(home: Path) -> str:
    """The DVC hash of the raw data, from ``data.dvc`` (``unknown`` without one)."""
    path = home / "data.dvc"
    if not path.is_file():
        return "unknown"
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))


def _git(home: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=home, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_commit(home: Path) -> str:
    """The source commit: ``$CODISTILL_GIT_COMMIT`` (images), else git, else ``unknown``."""
    return os.environ.get(GIT_COMMIT_ENV) or _git(home, "rev-parse", "HEAD") or "unknown"


def git_dirty(home: Path) -> bool:
    """Whether tracked sources differ from the commit.

    ``dvc.lock`` and ``build/`` are left out: DVC rewrites them while the pipeline runs.
    """
    changes = _git(home, "status", "--porcelain", "--untracked-files=no", "--", ".", *EXCLUDED)
    return bool(changes)


def pipeline_key(raw_params: dict, data_md5: str, commit: str, explicit: str | None) -> str:
    """The key that all stages of one pipeline run share (a retried stage included)."""
    if explicit or os.environ.get(PIPELINE_RUN_ENV):
        return explicit or os.environ[PIPELINE_RUN_ENV]
    text = yaml.safe_dump(raw_params, sort_keys=True) + data_md5 + commit
    return "dvc-" + hashlib.sha256(text.encode()).hexdigest()[:16]


class StageLineage:
    """The nested run of one stage: the environment that points trackers at it, and a recorder."""

    def __init__(self, client: Any, run_id: str, parent_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.parent_id = parent_id
        self.environment = {"MLFLOW_RUN_ID": run_id}

    def record(self, summary: StageSummary) -> None:
        """Log the stage summary's metrics, parameters and message on the stage run."""
        from mlflow.entities import Metric, Param

        entries = [Param(k, str(v)) for k, v in summary.params.items()]
        if entries:
            self.client.log_batch(self.run_id, params=entries)
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in summary.metrics.items()]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])
        if summary.message:
            self.client.set_tag(self.run_id, "codistill.summary", summary.message[:5000])


def _parent_run(
    client: Any, experiment_id: str, key: str, params: Params, data_md5: str, home: Path
) -> str:
    # An unfinished parent (running, or failed and now retried) is this run's; a finished
    # one belongs to an earlier run of the same configuration.
    found = [
        run
        for run in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{key}' and tags.`{STAGE_TAG}` IS NULL",
            order_by=["attributes.start_time DESC"],
            max_results=20,
        )
        if run.info.status != "FINISHED"
    ]
    if found:
        if found[0].info.status != "RUNNING":
            client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    from mlflow.entities import Param

    commit = git_commit(home)
    run = client.create_run(
        experiment_id, run_name=f"pipeline-{key}", tags={KEY_TAG: key, GIT_TAG: commit}
    )
    values = {
        "lineage.data_md5": data_md5,
        "lineage.git_commit": commit,
        "lineage.git_dirty": git_dirty(home),
        **flatten(asdict(params)),
    }
    entries = [Param(k, str(v)) for k, v in values.items()]
    for start in range(0, len(entries), BATCH):
        client.log_batch(run.info.run_id, params=entries[start : start + BATCH])
    return run.info.run_id


def _stage_run(client: Any, experiment_id: str, key: str, stage: str, parent_id: str) -> str:
    """The stage's run: its unfinished run of this pipeline run, continued, or a new one.

    A killed or failed stage that runs again (a training resuming from its checkpoint)
    thus goes on in the run its first attempt opened, the one its checkpoint names.
    """
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key}' and tags.`{STAGE_TAG}` = '{stage}' "
        "and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for name, value in owner_tags().items():
            client.set_tag(run_id, name, value)
        return run_id
    tags = {PARENT_TAG: parent_id, STAGE_TAG: stage, KEY_TAG: key, **owner_tags()}
    return client.create_run(experiment_id, run_name=stage, tags=tags).info.run_id


@contextmanager
def stage_run(
    params: Params, raw_params: dict, stage: str, pipeline_run: str | None, last: bool
) -> Iterator[StageLineage]:
    """A nested MLflow run for ``stage`` under its pipeline run's parent, closed on exit.

    A failing stage marks both runs FAILED; the ``last`` stage finishes the parent. Runs of
    this host whose process died are marked KILLED first, with their parents.
    """
    client = mlflow_client()
    name = experiment_name()
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    home = project_home()
    data_md5 = data_hash(home)
    key = pipeline_key(raw_params, data_md5, git_commit(home), pipeline_run)
    for run_id in end_abandoned_runs(client, experiment_id):
        parent = client.get_run(run_id).data.tags.get(PARENT_TAG)
        if parent is not None:
            client.set_terminated(parent, "KILLED")
    parent_id = _parent_run(client, experiment_id, key, params, data_md5, home)
    run_id = _stage_run(client, experiment_id, key, stage, parent_id)
    lineage = StageLineage(client, run_id, parent_id)
    try:
        yield lineage
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if last:
        client.set_terminated(parent_id, "FINISHED")
