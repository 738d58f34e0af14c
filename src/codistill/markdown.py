"""Markdown for the tables the stages, studies and benchmarks write."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table; every column after the first is right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def section_markers(key: str) -> tuple[str, str]:
    """The HTML comments that open and close the generated section ``key`` of a markdown file."""
    return f"<!-- {key}: begin -->", f"<!-- {key}: end -->"


def replace_section(text: str, key: str, lines: Sequence[str]) -> str | None:
    """``text`` with its section ``key`` replaced by ``lines`` (markers kept); None if absent."""
    begin, end = section_markers(key)
    if begin not in text:
        return None
    head, rest = text.split(begin, 1)
    if end not in rest:
        return None
    return head + "\n".join([begin, *lines, end]) + rest.split(end, 1)[1]
