"""A study in MLflow: one parent run per study, a nested run per row and seed.

The trainer's own MLflow run (parameters, curves, final loss) nests under the study's parent
run, which a later ``codistill study run`` continues. Each nested run is tagged with its
study, row, seed and identity, and gets the scores the result file records; the result files
stay the record of truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from codistill.study.results import RunSpec

PARENT_TAG = "study_parent"


@contextmanager
def study_parent_run(study: str) -> Iterator[str]:
    """Start the study's parent run, or continue the one an earlier call started; its id.

    It ends FINISHED, or FAILED (KILLED on an interrupt) if the block raises.
    """
    from codistill.engine.tracking import experiment_name, mlflow_client, mlflow_for_run, owner_tags

    client = mlflow_client()
    experiment = client.get_experiment_by_name(experiment_name())
    found = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.{PARENT_TAG} = '{study}'",
            max_results=1,
        )
        if experiment is not None
        else []
    )
    run_id = found[0].info.run_id if found else None
    mlflow = mlflow_for_run(run_id)
    tags = {PARENT_TAG: study, "study": study, **owner_tags()}
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else f"study-{study}", tags=tags)
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run()


def tracked_study(study: str, tracking: bool) -> AbstractContextManager:
    """The study's parent run when ``tracking``, else a block that records nothing."""
    return study_parent_run(study) if tracking else nullcontext()


def record_study_run(run_id: str, study: str, spec: RunSpec, result: dict[str, Any]) -> None:
    """Tag the nested run ``run_id`` with the study, row, seed and identity; log its scores."""
    from codistill.engine.tracking import mlflow_client

    client = mlflow_client()
    tags = {
        "study": study,
        "study_row": spec.label,
        "study_seed": str(spec.seed),
        "study_identity": result["identity"],
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for split, roles in result["scores"].items():
        for role, score in roles.items():
            client.log_metric(run_id, f"{split}_{role}_miou", score["miou"])
