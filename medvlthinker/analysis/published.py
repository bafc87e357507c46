"""The paper's published numbers (docs/protocol.md section 10): the shipped CSV, its Avg. check, and the interval a
reproduction should land in (section 11).

>>> check_published_averages(load_published())  # the paper's Avg. column follows from its six columns
>>> list(HALF_WIDTHS) == list(COLUMNS)  # one expected half-width per column, from the benchmarks registry
True
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources

from medvlthinker.analysis import AnalysisError
from medvlthinker.benchmarks import AVERAGE_HALF_WIDTH, AVG, BENCHMARKS, COLUMNS


def published_results_path() -> str:
    return str(resources.files("medvlthinker") / "resources" / "published_results.csv")


def load_published(path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """The paper's table (docs/protocol.md section 10): ``{model: {"PMC": 44.77, ..., "Avg.": 49.14}}``, in file order."""
    path = path or published_results_path()
    table: dict[str, dict[str, float]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("model",) + COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AnalysisError(f"{path}: missing columns {missing}; the header must be model,{','.join(COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                table[row["model"]] = {c: float(row[c]) for c in COLUMNS}
            except (TypeError, ValueError) as exc:
                raise AnalysisError(
                    f"{path} line {line} ({row.get('model')!r}): {exc}; cells must be numbers"
                ) from None
    return table


def average_of(values: Mapping[str, float | None]) -> float | None:
    """The unweighted mean of the six benchmark columns (None when one is missing)."""
    cells = [values.get(b.label) for b in BENCHMARKS]
    if any(v is None for v in cells):
        return None
    return math.fsum(cells) / len(cells)


def check_published_averages(published: Mapping[str, Mapping[str, float]], tolerance: float = 0.01) -> None:
    """Raise unless every row's Avg. equals the mean of its six columns within ``tolerance`` (rounding)."""
    for model, row in published.items():
        avg = average_of(row)
        if avg is None or abs(avg - row[AVG]) > tolerance:
            raise AnalysisError(
                f"published row {model!r}: Avg. {row[AVG]} but the mean of the six columns is {avg}; "
                f"fix the row in {published_results_path()}"
            )


HALF_WIDTHS: dict[str, float] = {b.label: b.half_width for b in BENCHMARKS} | {AVG: AVERAGE_HALF_WIDTH}
"""95% half-widths in points of one benchmark at its size (docs/protocol.md section 11): the expected interval of a
reproduced number is the published one +- this (rows sharing an image widen the real interval somewhat)."""


def published_rows(names: Sequence[str], published: Mapping[str, Mapping[str, float]] | None = None,
                   ) -> dict[str, dict[str, float]]:
    """The published rows called ``names`` (drawn on the radar); an unknown name is an error listing the known."""
    published = published if published is not None else load_published()
    unknown = [m for m in names if m not in published]
    if unknown:
        raise AnalysisError(f"--published_model {unknown[0]!r}: not a published row; use one of {list(published)}")
    return {m: dict(published[m]) for m in names}
