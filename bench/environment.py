"""What every benchmark table states: the machine, the versions and the command."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from codistill.artifacts import write_text_atomic
from codistill.markdown import markdown_table, replace_section, section_markers
from codistill.study.provenance import cpu_model, made_with_lines


def machine_lines(packages: tuple[str, ...]) -> list[str]:
    """Markdown bullet lines naming the machine, Python and the given package versions."""
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in packages)
    return [
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}, {versions}",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
    ]


def run_machine_lines(runs: Iterable[dict[str, Any]], packages: tuple[str, ...]) -> list[str]:
    """Bullet lines: what the ``runs`` were made with, then where and how the table was written.

    A table written from results (``--no-train``, or results trained elsewhere) names the
    machines and versions of the runs it shows, and only then the machine that wrote it.
    """
    here, versions, command = machine_lines(packages)
    return [
        *made_with_lines(runs),
        f"- tables written on: {here.removeprefix('- machine: ')}, with "
        + versions.removeprefix("- "),
        command,
    ]


def bench_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every model benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("build/prepared/camvid"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def tracking() -> bool:
    """Whether runs a bench trains go to MLflow: when a tracking URI is set."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def num_classes(params: Any) -> int:
    """The class count of the dataset ``params`` names."""
    from codistill.data import dataset_spec

    return dataset_spec(params.data.dataset).num_classes


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots(...)`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure: Any, path: Path) -> None:
    """Lay out ``figure``, write it to ``path`` and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


RESULTS = Path("docs/results.md")
RESULTS_PREAMBLE = """# codistill results

Every table below is written by a script in `bench/`, which replaces only its own section;
each section names its machine, versions and the exact command. Re-run a command to refresh
its table.
"""


def write_section(path: Path, key: str, lines: Sequence[str]) -> None:
    """Replace the section ``key`` of the markdown file ``path`` (append it if new)."""
    text = path.read_text() if path.is_file() else RESULTS_PREAMBLE
    replaced = replace_section(text, key, lines)
    if replaced is None:
        begin, end = section_markers(key)
        replaced = text.rstrip("\n") + "\n\n" + "\n".join([begin, *lines, end]) + "\n"
    write_text_atomic(path, replaced)


def publish_table(
    path: Path,
    title: str,
    description: str,
    packages: tuple[str, ...],
    header: list[str],
    rows: list[list[str]],
    extra: Sequence[str] = (),
    key: str | None = None,
    runs: Iterable[dict[str, Any]] | None = None,
) -> None:
    """Write a benchmark table naming machine, versions and command into its section; print it.

    The section of ``path`` is keyed by ``key``, by default the script's name. ``extra`` lines
    (more tables measured in the same run) follow the table. A table of recorded ``runs``
    names the machines and versions they were made with (``run_machine_lines``).
    """
    lines = [
        f"## {title}",
        "",
        description,
        "",
        *(machine_lines(packages) if runs is None else run_machine_lines(runs, packages)),
        "",
        *(markdown_table(header, rows) if header else []),
        *extra,
    ]
    write_section(path, key or Path(sys.argv[0]).stem, lines)
    print("\n".join(lines))
