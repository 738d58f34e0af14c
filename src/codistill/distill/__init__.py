"""Co-distillation losses: HFD, region- and pixel-wise BSD, the DML and KDCL baselines."""

from codistill.distill import hfd, mutual, pixel_bsd, region_bsd  # noqa: F401 - registers terms
from codistill.distill.objective import CoDistillationObjective, warmup_factor
from codistill.distill.pair import StudentPair
from codistill.distill.registry import build_term, list_terms

__all__ = [
    "CoDistillationObjective",
    "StudentPair",
    "build_term",
    "list_terms",
    "warmup_factor",
]
