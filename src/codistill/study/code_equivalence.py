"""Which versions of the weight-shaping code are known to train the same weights.

A study result counts only for the code that made it (its digest is part of the run's
identity). A change that does not alter what training computes (a clearer error message, a
safer checkpoint write, a moved function) would otherwise make every finished run stale.
``codistill study replay`` trains the same short runs with an earlier commit's code and with
the present code, and only if every student's weights come out bit for bit the same does it
append a record here: the two digests, the commits, the numeric modes it ran in and the
evidence. Results made in those modes with any digest that records link to the present one
count as current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codistill.artifacts import write_json_atomic

EQUIVALENCE_FILE = Path("bench/results/code_equivalence.json")
# Each end-to-end reproduction of a committed run, matched or not.
REPRODUCTIONS_FILE = Path("bench/results/reproductions.json")


def read_records(path: Path = EQUIVALENCE_FILE) -> list[dict[str, Any]]:
    """Every recorded equivalence, oldest first (none without the file)."""
    return json.loads(path.read_text())["records"] if path.is_file() else []


def equivalent_codes(digest: str, records: list[dict[str, Any]], precision: str) -> set[str]:
    """``digest`` and every digest a chain of records links to it (either way) in ``precision``.

    A replay's record holds for the numeric modes it ran in (older ones: float32 only); a
    record of a narrowed digest definition (its covered files unchanged) holds in every mode.
    """
    from codistill.engine.precision import FLOAT32  # torch: not for the CLI's --help

    shown = [r for r in records if "definition" in r or precision in r.get("precisions", [FLOAT32])]
    linked = {digest}
    grew = True
    while grew:
        grew = False
        for record in shown:
            pair = {record["from"], record["to"]}
            if pair & linked and not pair <= linked:
                linked |= pair
                grew = True
    return linked


def append_record(record: dict[str, Any], path: Path = EQUIVALENCE_FILE) -> None:
    """Add ``record`` (with ``from``, ``to`` and its evidence) to the file."""
    if record["from"] == record["to"]:
        raise ValueError(f"nothing to record: both codes have digest {record['to']}")
    write_json_atomic(path, {"records": [*read_records(path), record]})
