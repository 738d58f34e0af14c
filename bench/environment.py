"""What every benchmark table states: the machine, the versions and the command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path

from codistill.artifacts import write_text_atomic


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


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table; every column after the first is right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def publish_table(
    path: Path,
    title: str,
    description: str,
    packages: tuple[str, ...],
    header: list[str],
    rows: list[list[str]],
    extra: list[str] = (),
) -> None:
    """Write a markdown benchmark table that names machine, versions and command; print it.

    ``extra`` lines (more sections, measured in the same run) follow the table.
    """
    lines = [
        f"# {title}",
        "",
        description,
        "",
        *machine_lines(packages),
        "",
        *markdown_table(header, rows),
        *extra,
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")
    print("\n".join(lines))
