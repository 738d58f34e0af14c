"""What every benchmark table states: the machine, the versions and the command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines(packages: tuple[str, ...]) -> list[str]:
    """Markdown bullet lines naming the machine, Python and the given package versions."""
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    return [
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}, {versions}",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
    ]
