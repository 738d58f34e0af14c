"""The term registry: every distillation term, its own options, and the methods built from them.

Each term's name is written here once. ``params.yaml`` has a ``distill.<name>`` section and a
``distill.weights.<name>`` per term, the methods are presets (which terms they switch on), the
proposed method's terms have an on/off switch each under ``train``, and the curves log a
``loss_<name>`` column per term: all of them are derived from ``TERMS`` and ``METHODS``.
``codistill.distill`` binds a loss module to each name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from codistill.config.loader import NON_NEGATIVE, POSITIVE, Range


@dataclass(frozen=True)
class HFDConfig:
    """Heterogeneous feature distillation on the stage-1 features."""

    mode: Literal["mimic", "crossfeed"]


@dataclass(frozen=True)
class RegionBSDConfig:
    """Region-wise selective distillation on decoder features."""

    window: Annotated[int, Range(1)]
    margin: Annotated[float, NON_NEGATIVE]
    score: Literal["ce", "entropy"]


@dataclass(frozen=True)
class TemperatureConfig:
    """A distillation term whose only knob is the softmax temperature."""

    temperature: Annotated[float, POSITIVE]


@dataclass(frozen=True)
class PixelBSDConfig(TemperatureConfig):
    """Pixel-wise selective distillation on logits: a selection rule and a temperature."""

    rule: Literal["correct_only", "correct_or_more_confident", "lower_ce"]


@dataclass(frozen=True)
class Term:
    """One distillation term: its name and the dataclass of its section of ``distill``.

    A ``directional`` term decides per unit (window, pixel) which student teaches, and logs
    the share of units each student taught.
    """

    name: str
    options: type
    directional: bool = False


TERMS: tuple[Term, ...] = (
    Term("hfd", HFDConfig),  # heterogeneous feature distillation, stage-1 features
    Term("rbsd", RegionBSDConfig, directional=True),  # region-wise BSD, decoder features
    Term("pbsd", PixelBSDConfig, directional=True),  # pixel-wise BSD, logits
    Term("dml", TemperatureConfig),  # deep mutual learning (baseline)
    Term("kdcl", TemperatureConfig),  # KDCL: the students' ensemble teaches (baseline)
)
TERM_NAMES: tuple[str, ...] = tuple(term.name for term in TERMS)

# Each method is a preset: the terms it trains with, by name.
METHODS: dict[str, tuple[str, ...]] = {
    "independent": (),
    "dml": ("dml",),
    "kdcl": ("kdcl",),
    "ours": ("hfd", "rbsd", "pbsd"),
}
# The proposed method's terms, each with an ablation switch ``train.<name>``.
SWITCHABLE_TERMS: tuple[str, ...] = METHODS["ours"]


def check_presets(methods: dict[str, tuple[str, ...]], term_names: tuple[str, ...]) -> None:
    """Raise ValueError if a method preset names a term that the registry does not declare."""
    undeclared = sorted({n for names in methods.values() for n in names} - set(term_names))
    if undeclared:
        raise ValueError(f"method presets name undeclared terms: {', '.join(undeclared)}")


check_presets(METHODS, TERM_NAMES)


def active_terms(method: str, switches: dict[str, bool | None]) -> tuple[str, ...]:
    """The method's terms, with each switch (true/false) turning its term on or off."""
    terms = set(METHODS[method])
    for name, value in switches.items():
        if value is True:
            terms.add(name)
        elif value is False:
            terms.discard(name)
    return tuple(name for name in TERM_NAMES if name in terms)


def directional_shares(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The logged direction shares, ``<term>_<role>_teaches``, of the directional terms."""
    return tuple(f"{t.name}_{role}_teaches" for t in TERMS if t.directional for role in roles)
