"""The paper table rendered: Markdown, LaTeX (booktabs), TSV with every statistic, and JSON, written whole; and the
published table with the interval a reproduction should land in (docs/reproduction.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from medvlthinker.analysis.paper_table import Cell, PaperTable
from medvlthinker.analysis.published import HALF_WIDTHS, load_published
from medvlthinker.benchmarks import AVG, BENCHMARKS, BY_LABEL, COLUMNS
from medvlthinker.staging import write_text


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def expected_intervals_markdown(published: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The published table as ``value [low, high]`` with the section-11 half-widths (docs/reproduction.md)."""
    published = published if published is not None else load_published()
    header = ("Model",) + COLUMNS
    rows = [
        [model] + [f"{row[c]:.2f} [{row[c] - HALF_WIDTHS[c]:.1f}, {row[c] + HALF_WIDTHS[c]:.1f}]" for c in COLUMNS]
        for model, row in published.items()
    ]
    return md_table(header, rows) + "\n"


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    spread = f" ±{cell.spread:.2f}" if cell.spread is not None else ""
    return f"{cell.mean:.2f}{spread}"


def to_markdown(
    table: PaperTable,
    comparison: Mapping[str, Mapping[str, Any]] | None = None,
    paired: Mapping[str, Any] | None = None,
) -> str:
    """The table in Markdown: accuracy (± spread across repeats), 95% intervals, rows and conversion failures;
    then the published comparison and the paired comparison when given."""
    level = round(100 * (1 - table.alpha))
    parts = [
        "## Accuracy (%)",
        "",
        f"Mean over greedy repeats, ± the standard deviation across repeats; graded with `{table.grading}`.",
        "",
        md_table(
            ("Model",) + COLUMNS, [[r.model] + [_cell_text(r.cells.get(c)) for c in COLUMNS] for r in table.rows]
        ),
        "",
        f"## {level}% bootstrap interval",
        "",
        f"{table.n_resamples} resamples{', clustered by image where known' if table.cluster_by_image else ''}; "
        f"repeats averaged per row.",
        "",
        md_table(
            ("Model",) + COLUMNS,
            [
                [r.model] + [f"[{c.low:.2f}, {c.high:.2f}]" if (c := r.cells.get(col)) else "—" for col in COLUMNS]
                for r in table.rows
            ],
        ),
        "",
        "## Rows, repeats and conversion failures",
        "",
        md_table(
            ("Model",) + COLUMNS,
            [
                [r.model]
                + [
                    f"{c.rows} × {c.repeats}, {100 * c.conversion_failure_rate:.1f}% unparsed"
                    if (c := r.cells.get(col))
                    else "—"
                    for col in COLUMNS
                ]
                for r in table.rows
            ],
        ),
    ]
    if comparison:
        parts += ["", "## Against the published numbers", "", "Ours − published (percentage points); * = the "
                  f"published number lies outside our {level}% interval.", ""]
        rows = []
        for model, entry in comparison.items():
            cells = entry["cells"]
            rows.append(
                [f"{model} vs {entry['published_model']}"]
                + [
                    f"{cells[c]['diff']:+.2f}{'' if cells[c]['inside'] else '*'} ({cells[c]['published']:.2f})"
                    if c in cells
                    else "—"
                    for c in COLUMNS
                ]
            )
        parts.append(md_table(("Model",) + COLUMNS, rows))
    if paired:
        parts += ["", f"## Paired comparison: {paired['a']} − {paired['b']}", "",
                  f"Difference in points, {level}% paired-bootstrap interval, bootstrap p-value, McNemar p-value. "
                  "A bootstrap p of — with one resampling unit: every row of the benchmark is in one image cluster "
                  "(or there is one row), so resampling cannot test the difference.", ""]
        res = paired["results"]
        parts.append(
            md_table(
                ("",) + COLUMNS,
                [
                    ["diff"] + [f"{res[c]['diff']:+.2f}" if c in res else "—" for c in COLUMNS],
                    ["interval"] + [f"[{res[c]['low']:+.2f}, {res[c]['high']:+.2f}]" if c in res else "—"
                                    for c in COLUMNS],
                    ["p (bootstrap)"] + [_fmt(res[c]["p_value"], 4) if c in res else "—" for c in COLUMNS],
                    ["resampled units"] + [str(res[c]["units"]) if "units" in res.get(c, {}) else "—"
                                           for c in COLUMNS],
                    ["p (McNemar)"] + [_fmt(res[c].get("mcnemar_p_value"), 4) if c in res else "—" for c in COLUMNS],
                ],
            )
        )
    return "\n".join(parts) + "\n"


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(table: PaperTable, comparison: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A booktabs tabular: mean (± spread) with the interval below in small type; published diffs if given."""
    header = " & ".join(["Model"] + [b.label for b in BENCHMARKS] + [AVG])
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{tabular}{l" + "c" * len(COLUMNS) + "}",
        "\\toprule",
        header + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = []
        for col in COLUMNS:
            cell = row.cells.get(col)
            if cell is None:
                cells.append("--")
                continue
            text = f"{cell.mean:.2f}"
            if cell.spread is not None:
                text += f"$_{{\\pm {cell.spread:.2f}}}$"
            text += f" {{\\scriptsize [{cell.low:.1f}, {cell.high:.1f}]}}"
            if comparison and row.model in comparison and col in comparison[row.model]["cells"]:
                text += f" {{\\scriptsize ({comparison[row.model]['cells'][col]['diff']:+.2f})}}"
            cells.append(text)
        lines.append(" & ".join([_tex_escape(row.model)] + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


TSV_FIELDS = (
    "model", "column", "dataset_name", "mean", "spread", "ci_low", "ci_high", "repeats", "rows", "num_rollouts",
    "conversion_failure_rate", "per_repeat", "published_model", "published", "diff", "published_inside_ci",
)


def to_tsv(table: PaperTable, comparison: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """One line per (model, column) with every statistic, full precision (for further analysis)."""
    lines = ["\t".join(TSV_FIELDS)]
    for row in table.rows:
        for col in COLUMNS:
            cell = row.cells.get(col)
            if cell is None:
                continue
            comp = (comparison or {}).get(row.model)
            ref = comp["cells"].get(col) if comp else None
            values = [
                row.model, col, BY_LABEL[col].dataset_name if col in BY_LABEL else "", cell.mean, "" if cell.spread is None else cell.spread,
                cell.low, cell.high, cell.repeats, cell.rows, cell.num_rollouts, cell.conversion_failure_rate,
                ",".join(f"{v:.6f}" for v in cell.per_repeat),
                comp["published_model"] if comp else "", ref["published"] if ref else "",
                ref["diff"] if ref else "", ref["inside"] if ref else "",
            ]
            lines.append("\t".join(str(v) for v in values))
    return "\n".join(lines) + "\n"


def write_tables(
    table: PaperTable,
    out_dir: str | os.PathLike,
    comparison: Mapping[str, Mapping[str, Any]] | None = None,
    paired: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``table.md``, ``table.tex``, ``table.tsv`` and ``table.json`` into ``out_dir``; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"table.{ext}") for ext in ("md", "tex", "tsv", "json")}
    texts = {
        "md": to_markdown(table, comparison, paired),
        "tex": to_latex(table, comparison),
        "tsv": to_tsv(table, comparison),
        "json": json.dumps({"table": table.to_dict(), "published_comparison": comparison, "paired": paired},
                           indent=2) + "\n",
    }
    for ext, path in paths.items():
        write_text(path, texts[ext])
    return paths
