"""What a preparation run read, wrote and skipped: the malformed-row error, the fatal error and the report.

A malformed source row is never dropped silently: it is counted by reason with examples in a :class:`PrepareReport`,
and either skipped (``on_error="skip"``) or fatal (``on_error="fail"``, :func:`fail_or_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.cli import UserError

ON_ERROR = ("skip", "fail")


class MalformedRow(UserError):
    """One source row that cannot become a unified row: ``reason`` is a short key, ``detail`` says what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class PrepareError(UserError):
    """A fatal preparation problem (a missing column, a malformed row with on_error="fail"); names the fix."""


@dataclass
class PrepareReport:
    """What a preparation run read, wrote and skipped, by reason, with the first examples of each reason."""

    source: str
    rows_read: int = 0
    rows_written: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    resized: int = 0
    max_examples: int = 5

    def add_malformed(self, position: int, exc: MalformedRow, extra: Mapping[str, Any] | None = None) -> None:
        self.malformed[exc.reason] = self.malformed.get(exc.reason, 0) + 1
        if sum(1 for e in self.examples if e["reason"] == exc.reason) < self.max_examples:
            self.examples.append({"source_row": position, "reason": exc.reason, "detail": exc.detail, **(extra or {})})

    def merge(self, other: PrepareReport) -> None:
        self.rows_read += other.rows_read
        self.rows_written += other.rows_written
        self.resized += other.resized
        for mine, theirs in ((self.malformed, other.malformed), (self.warnings, other.warnings)):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        for example in other.examples:
            if sum(1 for e in self.examples if e["reason"] == example["reason"]) < self.max_examples:
                self.examples.append(example)

    @property
    def skipped(self) -> int:
        return sum(self.malformed.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["malformed"] = dict(sorted(self.malformed.items()))
        out["warnings"] = dict(sorted(self.warnings.items()))
        out["skipped"] = self.skipped
        return out

    def summary(self) -> str:
        lines = [f"{self.source}: read {self.rows_read} rows, wrote {self.rows_written}, skipped {self.skipped} malformed"]
        if self.resized:
            lines.append(f"  images resized by the PMC-VQA rule: {self.resized}")
        for reason, count in sorted(self.malformed.items()):
            lines.append(f"  malformed, {reason}: {count}")
            for example in (e for e in self.examples if e["reason"] == reason):
                lines.append(f"    e.g. source row {example['source_row']}: {example['detail']}")
        for reason, count in sorted(self.warnings.items()):
            lines.append(f"  kept with a warning, {reason}: {count}")
        return "\n".join(lines)


def fail_or_record(report: PrepareReport, on_error: str, position: int, exc: MalformedRow, source: str, **extra) -> None:
    if on_error == "fail":
        raise PrepareError(
            f"{source}, source row {position}: {exc.reason}: {exc.detail}; fix: repair the row, or pass "
            "--on_error skip to skip malformed rows (they are counted in the report)"
        ) from exc
    report.add_malformed(position, exc, extra)


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def check_rows_written(report: PrepareReport, *, image_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`PrepareError` with the malformed-row report when no row survived (an output with no rows
    would only fail a later stage); an existing output is left as it was."""
    if report.rows_written:
        return
    lines = report.summary().splitlines()
    fix = "repair the source rows listed above"
    images = report.malformed.get("image_missing", 0)
    if image_dir is not None and images * 2 > max(report.skipped, 1):
        fix = f"check --image_dir {image_dir}: the CSV's Figure_path entries must be relative to it"
    elif report.malformed.get("answer_mismatch", 0) * 2 > max(report.skipped, 1):
        fix = "check the Answer column, or pass --compat lenient (the chosen option's text is then used)"
    raise PrepareError(f"{'; '.join(line.strip() for line in lines)}; no row was written; fix: {fix}")


def write_report(report: PrepareReport, out_path: Path) -> Path:
    """``<out_path>.report.json`` (without a ``.parquet`` suffix), written whole or not at all."""
    from medvlthinker.staging import write_text

    path = out_path.with_name(out_path.name.removesuffix(".parquet") + ".report.json")
    return write_text(path, json.dumps(report.to_dict(), indent=2, default=str) + "\n")


