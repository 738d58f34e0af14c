"""The training loop calls its hooks in the order of their declared priorities."""

from pathlib import Path

from codistill.config import load_params
from codistill.engine.hooks import (
    CheckpointHook,
    CurvesHook,
    Hook,
    OutputsHook,
    Priority,
    ProgressHook,
    TrackingHook,
    in_priority_order,
)
from codistill.engine.trainer import standard_hooks, train_students
from codistill.study.runs import SnapshotHook
from tests.conftest import tiny_params_file


def test_the_hooks_that_depend_on_each_other_run_in_their_declared_order(tmp_path):
    hooks = [*standard_hooks(tmp_path, tracking=True), SnapshotHook(tmp_path, [1])]
    ordered = [type(h) for h in in_priority_order(reversed(hooks))]
    # a snapshot precedes the checkpoint that follows it; the checkpoint's resume precedes
    # what reads the state it restores; tracking logs what the outputs hook wrote
    assert ordered.index(SnapshotHook) < ordered.index(CheckpointHook)
    assert ordered.index(CheckpointHook) < min(
        ordered.index(CurvesHook), ordered.index(TrackingHook)
    )
    assert ordered.index(OutputsHook) < ordered.index(TrackingHook)
    assert ordered[0] is SnapshotHook and ordered[-1] is TrackingHook
    # equal priorities keep the order they were given in
    assert ordered.index(ProgressHook) < ordered.index(CurvesHook)


class Recorder(Hook):
    """Notes, in a shared list, the points at which it was called."""

    def __init__(self, name: str, priority: Priority, calls: list[str]) -> None:
        self.name, self.priority, self.calls = name, priority, calls

    def before_run(self, trainer) -> None:
        self.calls.append(f"{self.name} before_run")

    def after_run(self, trainer, metrics) -> None:
        self.calls.append(f"{self.name} after_run")


def test_the_trainer_calls_hooks_by_priority_not_by_the_order_given(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, "independent", iterations=1))
    calls: list[str] = []
    given = [
        Recorder("last", Priority.LOWEST, calls),
        Recorder("normal", Priority.NORMAL, calls),
        Recorder("first", Priority.HIGHEST, calls),
    ]
    train_students(params, prepared, Path(tmp_path / "out"), hooks=given)
    assert calls == [
        "first before_run",
        "normal before_run",
        "last before_run",
        "first after_run",
        "normal after_run",
        "last after_run",
    ]
