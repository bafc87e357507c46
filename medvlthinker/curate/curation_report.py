"""The report of a curation run (docs/protocol.md section 6, docs/data.md): the rows each filter removed, and the
pass-count distributions before and after, as a table and as plots (:mod:`medvlthinker.curate.curation` does the join,
the band and the order).

>>> pass_count_distribution([0, 1, 1, 16, -1], max_count=2)
Traceback (most recent call last):
...
ValueError: pass_count 16 is above max_count 2; fix: pass max_count >= the number of rollouts per question
>>> pass_count_distribution([0, 1, 1, -1], max_count=2)
{-1: 1, 0: 1, 1: 2, 2: 0}
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.inference.settings import CURATION
from medvlthinker.staging import write_json, write_text

NO_RESULT = -1
"""pass_count of a row that has no pass-rate record."""


@dataclass
class CurationReport:
    """What a curation run did: the rows each filter removed and the pass-count distributions."""

    rows_in: int
    rows_out: int
    remove_pass_count_below: int
    remove_pass_count_above: int
    removed_no_result: int
    removed_below: int
    removed_above: int
    order: str
    seed: int
    distribution_in: dict[int, int] = field(default_factory=dict)
    distribution_out: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # JSON keys are strings; keep them in numeric order so the file reads like the table
        for key in ("distribution_in", "distribution_out"):
            out[key] = {str(k): v for k, v in sorted(out[key].items())}
        return out

    def summary(self) -> str:
        return (
            f"rows in: {self.rows_in}\n"
            f"removed, no pass-rate result (pass_count -1): {self.removed_no_result}\n"
            f"removed, pass_count < {self.remove_pass_count_below}: {self.removed_below}\n"
            f"removed, pass_count > {self.remove_pass_count_above}: {self.removed_above}\n"
            f"rows out: {self.rows_out} (order {self.order}, seed {self.seed})"
        )


def pass_count_distribution(counts: Iterable[int], max_count: int = CURATION.rollouts) -> dict[int, int]:
    """``{pass_count: rows}`` for 0..max_count (zeros included), plus -1 when some rows have no result."""
    tally = Counter(int(c) for c in counts)
    for value in tally:
        if value > max_count:
            raise ValueError(
                f"pass_count {value} is above max_count {max_count}; fix: pass max_count >= the number of rollouts "
                "per question"
            )
        if value < NO_RESULT:
            raise ValueError(f"pass_count {value} is negative; only -1 (no result) may be")
    out = {NO_RESULT: tally[NO_RESULT]} if tally[NO_RESULT] else {}
    out.update({k: tally[k] for k in range(max_count + 1)})
    return out


def format_distribution_table(distribution: Mapping[int, int]) -> str:
    """A plain-text table: pass_count, rows, percent, cumulative percent (-1 reads "none")."""
    total = sum(distribution.values()) or 1
    lines = [f"{'pass_count':>10} {'rows':>8} {'percent':>8} {'cum.%':>7}"]
    running = 0
    for key in sorted(distribution):
        running += distribution[key]
        label = "none" if key == NO_RESULT else str(key)
        lines.append(
            f"{label:>10} {distribution[key]:>8} {100 * distribution[key] / total:>8.2f} {100 * running / total:>7.2f}"
        )
    lines.append(f"{'total':>10} {sum(distribution.values()):>8}")
    return "\n".join(lines)


def plot_pass_count_distribution(distribution: Mapping[int, int], out_path: str | os.PathLike, title: str | None = None):
    """A bar plot of ``distribution`` saved to ``out_path`` (PNG, PDF or SVG by extension); returns the path.

    The file carries no timestamp, so the same distribution gives the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.text

    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    metadata = {".png": {}, ".pdf": {"CreationDate": None, "ModDate": None}, ".svg": {"Date": None}}
    if suffix not in metadata:
        raise ValueError(f"unsupported plot format {out_path.name}; fix: end the path with .png, .pdf or .svg")
    keys = sorted(distribution)
    labels = ["none" if k == NO_RESULT else str(k) for k in keys]
    values = [distribution[k] for k in keys]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(keys) + 1.5), 3.2))
    try:
        bars = ax.bar(labels, values, color=["#9a9a9a" if k == NO_RESULT else "#3b6ea5" for k in keys])
        ax.bar_label(bars, fontsize=7, padding=1)
        ax.set_xlabel("pass_count (correct rollouts)")
        ax.set_ylabel("questions")
        ax.set_title(title or f"Pass-count distribution ({sum(values)} questions)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        for text in fig.findobj(matplotlib.text.Text):
            text.set_parse_math(False)  # the title is user text: a pair of $ in it is not mathtext
        fig.tight_layout()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.hashsalt": "medvlthinker"}):
            fig.savefig(out_path, dpi=150, metadata=metadata[suffix])
    finally:
        plt.close(fig)
    return out_path


def write_curation_outputs(report: CurationReport, out_dir: str | os.PathLike, plot_format: str = "png") -> dict[str, Path]:
    """``curation_report.json``, ``pass_count_distribution.txt`` and the before/after plots in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out_dir / "curation_report.json",
        "table": out_dir / "pass_count_distribution.txt",
        "plot_in": out_dir / f"pass_count_distribution.{plot_format}",
        "plot_out": out_dir / f"pass_count_distribution_kept.{plot_format}",
    }
    write_json(paths["report"], report.to_dict())
    write_text(
        paths["table"],
        "all rows\n" + format_distribution_table(report.distribution_in)
        + "\n\nkept rows\n" + format_distribution_table(report.distribution_out) + "\n\n" + report.summary() + "\n",
    )
    plot_pass_count_distribution(report.distribution_in, paths["plot_in"], title=f"All rows ({report.rows_in})")
    plot_pass_count_distribution(
        report.distribution_out,
        paths["plot_out"],
        title=f"Kept rows, pass_count {report.remove_pass_count_below}..{report.remove_pass_count_above} ({report.rows_out})",
    )
    return paths
