"""The numeric mode a run trains in: float32, or bfloat16 autocast where the device has it.

``train.amp`` asks for bf16 autocast. On CUDA it is honoured where the GPU supports bf16; on
a CPU only where the processor has bf16 matrix instructions (AVX-512 BF16 or AMX), since
elsewhere autocast emulates bf16 and runs slower than float32. Anything the autocast policy
keeps in float32 stays so: the losses read float32 logits, batch norm keeps float32
statistics, and evaluation runs outside autocast.

``CODISTILL_CPU_BF16=1`` (or ``0``) overrides the CPU detection, for tests and for CPUs whose
flags the detection does not know.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from codistill.config import ConfigError

FLOAT32 = "float32"
BF16 = "bf16"
# /proc/cpuinfo flags of x86 instructions that multiply bf16 matrices in hardware.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FORCE_ENV = "CODISTILL_CPU_BF16"
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """The resolved numeric mode (``float32`` or ``bf16``) and why it was chosen."""

    mode: str
    reason: str

    @property
    def autocast(self) -> bool:
        """Whether the forward pass runs under bf16 autocast."""
        return self.mode == BF16

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context of this mode on ``device`` (a no-op in float32)."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first processor in ``cpuinfo`` (empty if unreadable)."""
    try:
        with cpuinfo.open() as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_engine(flags: frozenset[str] | None = None) -> str | None:
    """The CPU's bf16 matrix instructions (``amx_bf16`` or ``avx512_bf16``), or None.

    ``CODISTILL_CPU_BF16`` overrides the detection: ``1`` reports ``forced``, ``0`` None.
    """
    forced = os.environ.get(FORCE_ENV)
    if forced is not None:
        if forced not in {"0", "1"}:
            raise ConfigError(f"{FORCE_ENV}={forced!r}: expected 0 or 1")
        return "forced" if forced == "1" else None
    present = cpu_flags() if flags is None else flags
    return next((flag for flag in CPU_BF16_FLAGS if flag in present), None)


def resolve_precision(
    amp: bool, device: torch.device, flags: frozenset[str] | None = None
) -> Precision:
    """The mode ``train.amp`` gives on ``device``; ``flags`` stand in for the CPU's own."""
    if not amp:
        return Precision(FLOAT32, "train.amp is false")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(BF16, f"bf16 autocast on {torch.cuda.get_device_name(device)}")
        return Precision(FLOAT32, "train.amp is true, but this GPU has no bf16: float32")
    if device.type != "cpu":
        return Precision(FLOAT32, f"train.amp is true, but not honoured on {device.type}")
    engine = cpu_bf16_engine(flags)
    if engine == "forced":
        return Precision(BF16, f"bf16 autocast on the CPU ({FORCE_ENV}=1)")
    if engine is None:
        wanted = " or ".join(CPU_BF16_FLAGS)
        return Precision(
            FLOAT32, f"train.amp is true, but this CPU has no bf16 instructions ({wanted}): float32"
        )
    return Precision(BF16, f"bf16 autocast on the CPU ({engine})")
