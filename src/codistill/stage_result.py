"""What a stage's entry point returns, or raises when its result is unacceptable."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageSummary:
    """A stage's report: a message for the log, flat metrics and parameters for its run."""

    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class StageFailedError(RuntimeError):
    """A stage ran and found its result unacceptable; the message says why."""


class StageInputError(ValueError):
    """A stage's input is unusable (a file it reads lacks what it needs); the message says so."""
