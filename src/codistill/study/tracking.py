"""A study run in MLflow: the trainer's run, tagged with its study, row and seed, and its scores."""

from __future__ import annotations

from typing import Any

from codistill.study.results import RunSpec


def record_study_run(run_id: str, study: str, spec: RunSpec, scores: dict[str, Any]) -> None:
    """Tag the MLflow run ``run_id`` with the study's names and log each split's mIoU."""
    from codistill.engine.tracking import mlflow_client

    client = mlflow_client()
    tags = {"study": study, "study_row": spec.label, "study_seed": str(spec.seed)}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for split, roles in scores.items():
        for role, score in roles.items():
            client.log_metric(run_id, f"{split}_{role}_miou", score["miou"])
