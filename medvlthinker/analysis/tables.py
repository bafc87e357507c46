"""The paper table (docs/protocol.md sections 5, 10, 11) from eval output directories.

Input: the directories ``eval/run_offline_inference.py`` writes (``eval_results.jsonl``, or its
``shard-*-of-*.jsonl`` files while a run is unfinished), grouped by model: several greedy repeats of one model are
several directories under one name. Each cell of the table holds

- ``mean``: the benchmark accuracy (mean over rows of correct rollouts / rollouts, in percent), averaged over the
  repeats;
- ``spread``: the sample standard deviation of that accuracy across repeats (None with one repeat);
- ``low``/``high``: a 95% percentile-bootstrap interval over the benchmark's rows (over its images when the rows'
  ``misc`` carries an ``image_id``), each row's value being its accuracy averaged over the repeats;
- ``rows``, ``repeats``, ``num_rollouts`` and the ``conversion_failure_rate`` (rollouts whose prediction maps to no
  option letter).

"Avg." is the unweighted mean of the six benchmark accuracies; its interval resamples every benchmark at once
(:func:`medvlthinker.stats.bootstrap_average_ci`). The statistics themselves live in :mod:`medvlthinker.stats`.

Records are re-graded from their ``output_text`` in the ``regrade`` mode by default, because the published table
uses that grader while the eval writes strict grades (docs/protocol.md section 3); ``grading="recorded"`` keeps the
grades as written.

>>> [c.label for c in BENCHMARKS]
['PMC', 'MMMU', 'MedX-M', 'PathVQA', 'SLAKE', 'VQA-Rad']
>>> check_published_averages(load_published())  # the paper's Avg. column follows from its six columns
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from medvlthinker import grading, stats
from medvlthinker.errors import UserError
from medvlthinker.inference.regrade import attach_options, eval_options

GRADINGS = ("regrade", "strict", "recorded")
AVG = "Avg."


@dataclass(frozen=True)
class Benchmark:
    dataset_name: str
    label: str
    latex: str


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("pmc_vqa", "PMC", "PMC"),
    Benchmark("MMMU-medical", "MMMU", "MMMU"),
    Benchmark("MedXpertQA-MM", "MedX-M", "MedX-M"),
    Benchmark("pathvqa_closed", "PathVQA", "PathVQA"),
    Benchmark("slake_closed", "SLAKE", "SLAKE"),
    Benchmark("vqa_rad_closed", "VQA-Rad", "VQA-Rad"),
)
"""The six benchmarks in the paper's column order: dataset_name in the eval set, column label."""

COLUMNS: tuple[str, ...] = tuple(b.label for b in BENCHMARKS) + (AVG,)
LABEL_OF = {b.dataset_name: b.label for b in BENCHMARKS}
DATASET_OF = {b.label: b.dataset_name for b in BENCHMARKS}

EVAL_RESULTS = "eval_results.jsonl"
SHARD_GLOB = "shard-*-of-*.jsonl"


class AnalysisError(UserError):
    """Input that cannot be tabulated; the message names the file or row and the fix."""


# ---- published numbers -------------------------------------------------------------------------------------------


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


HALF_WIDTHS: dict[str, float] = {
    "PMC": 2.2, "MMMU": 7.5, "MedX-M": 1.8, "PathVQA": 1.6, "SLAKE": 4.6, "VQA-Rad": 5.7, AVG: 1.8,
}
"""95% half-widths in points of one benchmark at its size (docs/protocol.md section 11): the expected interval of a
reproduced number is the published one +- this (rows sharing an image widen the real interval somewhat)."""


def expected_intervals_markdown(published: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The published table as ``value [low, high]`` with the section-11 half-widths (docs/reproduction.md)."""
    published = published if published is not None else load_published()
    header = ("Model",) + COLUMNS
    rows = [
        [model] + [f"{row[c]:.2f} [{row[c] - HALF_WIDTHS[c]:.1f}, {row[c] + HALF_WIDTHS[c]:.1f}]" for c in COLUMNS]
        for model, row in published.items()
    ]
    return _md_table(header, rows) + "\n"


# ---- loading eval output -----------------------------------------------------------------------------------------


def load_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The eval records of one run directory (or JSONL file), sorted by dataset_index.

    The records reader every stage uses (:func:`medvlthinker.inference.records.read_run`): eval_results.jsonl,
    else the union of the shard files of an unfinished run; the original recipe's field names are read too.
    """
    from medvlthinker.inference.records import read_run

    try:
        return read_run(run_dir, required=("dataset_name", "dataset_index", "rollouts"))
    except (ValueError, FileNotFoundError) as exc:
        raise AnalysisError(str(exc)) from None


def regrade_records(
    records: Iterable[Mapping[str, Any]], grading_mode: str = "regrade", options: Mapping[int, Any] | None = None
) -> list[dict[str, Any]]:
    """Records graded as the table wants them: re-graded from output_text, or kept (``"recorded"``).

    ``options`` (``{dataset_index: options}``, :func:`medvlthinker.inference.regrade.eval_options`) fills in
    records written without options, as the original recipe's are.
    """
    if grading_mode not in GRADINGS:
        raise AnalysisError(f"unknown grading {grading_mode!r}; use one of {GRADINGS}")
    if options is not None:
        try:
            records = attach_options(records, options)
        except KeyError as exc:
            raise AnalysisError(exc.args[0]) from None
    elif grading_mode != "recorded":
        records = list(records)
        bare = next((r for r in records if r.get("options") is None), None)
        if bare is not None:
            raise AnalysisError(
                f"record dataset_name={bare.get('dataset_name')!r}, dataset_index={bare.get('dataset_index')!r} "
                f"has no options (a result file of the original recipe); fix: pass --eval-data with the eval set "
                f"the run was made on (e.g. UCSC-VLAA/MedVLThinker-Eval) to join them, or --grading recorded"
            )
    if grading_mode == "recorded":
        out = []
        for r in records:
            r = dict(r)
            r.setdefault("num_rollouts", len(r["rollouts"]))
            r.setdefault("num_correct", sum(1 for x in r["rollouts"] if x["is_correct"]))
            out.append(r)
        return out
    return [grading.grade_record(r, mode=grading_mode) for r in records]


def image_cluster(record: Mapping[str, Any]) -> str:
    """The resampling unit of a row: its ``misc.image_id`` when known (rows sharing an image move together)."""
    misc = record.get("misc")
    if isinstance(misc, str):
        try:
            misc = json.loads(misc) if misc else {}
        except ValueError:
            misc = {}
    if isinstance(misc, Mapping) and misc.get("image_id") not in (None, ""):
        return f"image:{misc['image_id']}"
    return f"row:{record['dataset_index']}"


@dataclass
class ModelRuns:
    """The repeats of one model: a name and, per repeat, its graded records."""

    name: str
    dirs: list[str]
    repeats: list[list[dict[str, Any]]]


def parse_run_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["MODEL=DIR", ...]`` -> ``[(model, dir), ...]``; a bare DIR is named after its folder."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(os.path.normpath(spec)), spec
        if not name or not path:
            raise AnalysisError(f"--run {spec!r}: expected MODEL=DIR")
        pairs.append((name, path))
    return pairs


def discover_runs(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Run directories under ``root`` laid out as ``ROOT/MODEL/REPEAT/`` (or ``ROOT/MODEL/`` for one run).

    Models and repeats are taken in sorted order.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise AnalysisError(f"--runs-root {root}: not a directory")
    pairs = []
    for model in sorted(os.listdir(root)):
        model_dir = os.path.join(root, model)
        if not os.path.isdir(model_dir):
            continue
        if _is_run_dir(model_dir):
            pairs.append((model, model_dir))
            continue
        for repeat in sorted(os.listdir(model_dir)):
            repeat_dir = os.path.join(model_dir, repeat)
            if os.path.isdir(repeat_dir) and _is_run_dir(repeat_dir):
                pairs.append((model, repeat_dir))
    if not pairs:
        raise AnalysisError(f"--runs-root {root}: no MODEL/REPEAT/{EVAL_RESULTS} found below it")
    return pairs


def _is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, EVAL_RESULTS)) or bool(glob.glob(os.path.join(path, SHARD_GLOB)))


def load_runs(
    pairs: Sequence[tuple[str, str]], grading_mode: str = "regrade", options: Mapping[int, Any] | None = None
) -> list[ModelRuns]:
    """Group ``(model, dir)`` pairs by model (first-seen order) and load and grade every repeat."""
    models: dict[str, ModelRuns] = {}
    for name, path in pairs:
        runs = models.setdefault(name, ModelRuns(name, [], []))
        runs.dirs.append(os.fspath(path))
        runs.repeats.append(regrade_records(load_records(path), grading_mode, options))
    return list(models.values())


# ---- the table ---------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One (model, column) of the table; accuracies in percent."""

    mean: float
    low: float
    high: float
    spread: float | None
    repeats: int
    rows: int
    num_rollouts: int
    conversion_failure_rate: float
    per_repeat: list[float] = field(default_factory=list)


@dataclass
class ModelRow:
    model: str
    cells: dict[str, Cell]
    dirs: list[str]
    missing: list[str] = field(default_factory=list)


@dataclass
class PaperTable:
    rows: list[ModelRow]
    grading: str
    n_resamples: int
    alpha: float
    seed: int
    cluster_by_image: bool

    def row(self, model: str) -> ModelRow:
        for row in self.rows:
            if row.model == model:
                return row
        raise KeyError(f"no model {model!r} in the table; models: {[r.model for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _by_benchmark(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["dataset_name"], []).append(record)
    return grouped


def _spread(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def row_values(
    runs: ModelRuns, dataset_name: str, cluster_by_image: bool = True
) -> tuple[list[int], list[float], list[str] | None]:
    """Per row of a benchmark, sorted by dataset_index: its accuracy averaged over the repeats, and its cluster.

    Every repeat must hold the same rows; otherwise the means over repeats would mix different question sets.
    """
    per_repeat: list[dict[int, Mapping[str, Any]]] = []
    for records in runs.repeats:
        per_repeat.append({int(r["dataset_index"]): r for r in records if r["dataset_name"] == dataset_name})
    reference = set(per_repeat[0])
    for path, rows in zip(runs.dirs, per_repeat):
        if set(rows) != reference:
            lost = sorted(reference ^ set(rows))[:10]
            raise AnalysisError(
                f"model {runs.name!r}, {dataset_name}: {path} holds {len(rows)} rows but {runs.dirs[0]} holds "
                f"{len(reference)} (differing dataset_index, first ones: {lost}); resume the unfinished run "
                f"(the eval resumes where it stopped) or leave it out"
            )
    index = sorted(reference)
    values = [math.fsum(grading.row_accuracy(rows[i]) for rows in per_repeat) / len(per_repeat) for i in index]
    clusters = [image_cluster(per_repeat[0][i]) for i in index] if cluster_by_image else None
    return index, values, clusters


def _conversion_failures(records: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    failures = total = 0
    for record in records:
        options = record.get("options")
        for rollout in record["rollouts"]:
            total += 1
            if options is None:
                failures += rollout.get("pred_letter") is None
            else:
                failures += grading.is_conversion_failure(rollout.get("pred_letter"), options)
    return failures, total


def build_table(
    model_runs: Sequence[ModelRuns],
    *,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    cluster_by_image: bool = True,
    grading_mode: str = "regrade",
) -> PaperTable:
    """The paper table for the given models (``grading_mode`` only records how the runs were graded)."""
    table_rows = []
    for runs in model_runs:
        cells: dict[str, Cell] = {}
        missing: list[str] = []
        avg_values: dict[str, list[float]] = {}
        avg_clusters: dict[str, list[str] | None] = {}
        repeat_accuracies: list[dict[str, float]] = [{} for _ in runs.repeats]
        for bench in BENCHMARKS:
            grouped = [_by_benchmark(records).get(bench.dataset_name, []) for records in runs.repeats]
            if not grouped[0]:
                missing.append(bench.label)
                continue
            _, values, clusters = row_values(runs, bench.dataset_name, cluster_by_image)
            mean, low, high = stats.bootstrap_ci(
                values, n_resamples=n_resamples, alpha=alpha, seed=seed, clusters=clusters
            )
            per_repeat = [100.0 * stats.avg_at_n(records) for records in grouped]
            for acc, store in zip(per_repeat, repeat_accuracies):
                store[bench.label] = acc
            failures = [_conversion_failures(records) for records in grouped]
            cells[bench.label] = Cell(
                mean=100.0 * mean,
                low=100.0 * low,
                high=100.0 * high,
                spread=_spread(per_repeat),
                repeats=len(grouped),
                rows=len(values),
                num_rollouts=sum(t for _, t in failures),
                conversion_failure_rate=sum(f for f, _ in failures) / max(1, sum(t for _, t in failures)),
                per_repeat=per_repeat,
            )
            avg_values[bench.label] = values
            avg_clusters[bench.label] = clusters
        if not missing:
            mean, low, high = stats.bootstrap_average_ci(
                avg_values, n_resamples=n_resamples, alpha=alpha, seed=seed, clusters=avg_clusters
            )
            per_repeat = [average_of(acc) for acc in repeat_accuracies]
            cells[AVG] = Cell(
                mean=100.0 * mean,
                low=100.0 * low,
                high=100.0 * high,
                spread=_spread(per_repeat),
                repeats=len(runs.repeats),
                rows=sum(c.rows for c in cells.values()),
                num_rollouts=sum(c.num_rollouts for c in cells.values()),
                conversion_failure_rate=sum(c.conversion_failure_rate * c.num_rollouts for c in cells.values())
                / max(1, sum(c.num_rollouts for c in cells.values())),
                per_repeat=per_repeat,
            )
        table_rows.append(ModelRow(runs.name, cells, list(runs.dirs), missing))
    return PaperTable(table_rows, grading_mode, n_resamples, alpha, seed, cluster_by_image)


# ---- comparisons -------------------------------------------------------------------------------------------------


def compare_published(
    table: PaperTable,
    published: Mapping[str, Mapping[str, float]],
    mapping: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model that has a published row: ``{"published_model", "cells": {col: {ours, published, diff, inside}}}``.

    ``mapping`` names the published row of a model (e.g. ``{"base": "Qwen2.5-VL-3B-Instruct"}``); a model whose
    own name is a published row needs no entry. ``inside`` says whether the published number lies in our interval.
    """
    mapping = dict(mapping or {})
    for ours, theirs in mapping.items():
        if theirs not in published:
            raise AnalysisError(
                f"--compare {ours}={theirs}: no published row {theirs!r}; choose one of {list(published)}"
            )
    out: dict[str, dict[str, Any]] = {}
    for row in table.rows:
        name = mapping.get(row.model, row.model if row.model in published else None)
        if name is None:
            continue
        cells = {}
        for col in COLUMNS:
            cell = row.cells.get(col)
            if cell is None:
                continue
            theirs = published[name][col]
            cells[col] = {
                "ours": cell.mean,
                "published": theirs,
                "diff": cell.mean - theirs,
                "inside": cell.low <= theirs <= cell.high,
            }
        out[row.model] = {"published_model": name, "cells": cells}
    return out


def paired_comparison(
    a: ModelRuns,
    b: ModelRuns,
    *,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    cluster_by_image: bool = True,
) -> dict[str, dict[str, Any]]:
    """Model a minus model b on the rows both scored, per benchmark and for Avg. (percentage points).

    Per benchmark: the paired bootstrap (same rows or images drawn for both) gives ``diff``, ``low``, ``high`` and
    ``p_value``; McNemar's test runs on the rows counted correct for each model (more than half of its repeats x
    rollouts correct; with greedy n=1 and one repeat that is plain correctness). For Avg.: the difference of the
    two averages with the interval of :func:`medvlthinker.stats.bootstrap_average_ci` over the per-row differences
    (``p_value`` None: read significance off the interval).
    """
    out: dict[str, dict[str, Any]] = {}
    diffs: dict[str, list[float]] = {}
    diff_clusters: dict[str, list[str] | None] = {}
    for bench in BENCHMARKS:
        name = bench.dataset_name
        if not any(r["dataset_name"] == name for r in a.repeats[0]) or not any(
            r["dataset_name"] == name for r in b.repeats[0]
        ):
            continue
        ia, va, ca = row_values(a, name, cluster_by_image)
        ib, vb, _ = row_values(b, name, cluster_by_image)
        common = sorted(set(ia) & set(ib))
        if not common:
            raise AnalysisError(f"{bench.label}: models {a.name!r} and {b.name!r} share no dataset_index")
        pa, pb = dict(zip(ia, va)), dict(zip(ib, vb))
        ka = dict(zip(ia, ca)) if ca is not None else None
        xa, xb = [pa[i] for i in common], [pb[i] for i in common]
        clusters = [ka[i] for i in common] if ka is not None else None
        result = stats.paired_bootstrap(
            xa, xb, clusters=clusters, n_resamples=n_resamples, alpha=alpha, seed=seed
        )
        test = stats.mcnemar([x > 0.5 for x in xa], [x > 0.5 for x in xb])
        out[bench.label] = {
            "diff": 100.0 * result["diff"],
            "low": 100.0 * result["low"],
            "high": 100.0 * result["high"],
            "p_value": result["p_value"],
            "units": result["units"],
            "mcnemar_p_value": test["p_value"],
            "mcnemar_b01": test["b01"],
            "mcnemar_b10": test["b10"],
            "rows": len(common),
        }
        diffs[bench.label] = [x - y for x, y in zip(xa, xb)]
        diff_clusters[bench.label] = clusters
    if len(diffs) == len(BENCHMARKS):
        mean, low, high = stats.bootstrap_average_ci(
            diffs, n_resamples=n_resamples, alpha=alpha, seed=seed, clusters=diff_clusters
        )
        out[AVG] = {"diff": 100.0 * mean, "low": 100.0 * low, "high": 100.0 * high, "p_value": None,
                    "rows": sum(len(v) for v in diffs.values())}
    return out


# ---- rendering ---------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


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
        _md_table(
            ("Model",) + COLUMNS, [[r.model] + [_cell_text(r.cells.get(c)) for c in COLUMNS] for r in table.rows]
        ),
        "",
        f"## {level}% bootstrap interval",
        "",
        f"{table.n_resamples} resamples{', clustered by image where known' if table.cluster_by_image else ''}; "
        f"repeats averaged per row.",
        "",
        _md_table(
            ("Model",) + COLUMNS,
            [
                [r.model] + [f"[{c.low:.2f}, {c.high:.2f}]" if (c := r.cells.get(col)) else "—" for col in COLUMNS]
                for r in table.rows
            ],
        ),
        "",
        "## Rows, repeats and conversion failures",
        "",
        _md_table(
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
        parts.append(_md_table(("Model",) + COLUMNS, rows))
    if paired:
        parts += ["", f"## Paired comparison: {paired['a']} − {paired['b']}", "",
                  f"Difference in points, {level}% paired-bootstrap interval, bootstrap p-value, McNemar p-value. "
                  "A bootstrap p of — with one resampling unit: every row of the benchmark is in one image cluster "
                  "(or there is one row), so resampling cannot test the difference.", ""]
        res = paired["results"]
        parts.append(
            _md_table(
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
    header = " & ".join(["Model"] + [b.latex for b in BENCHMARKS] + ["Avg."])
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
                row.model, col, DATASET_OF.get(col, ""), cell.mean, "" if cell.spread is None else cell.spread,
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
        tmp = path + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(texts[ext])
        os.replace(tmp, path)
    return paths


# ---- one call for the scripts ------------------------------------------------------------------------------------


@dataclass
class TableResult:
    """What :func:`make_tables` computed: the table, the comparisons, the loaded runs."""

    table: PaperTable
    models: list[ModelRuns]
    comparison: dict[str, dict[str, Any]] | None
    paired: dict[str, Any] | None


def make_tables(
    run_specs: Sequence[str] = (),
    runs_root: str | os.PathLike | None = None,
    *,
    grading_mode: str = "regrade",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    cluster_by_image: bool = True,
    compare: Sequence[str] = (),
    compare_published_names: bool = True,
    published_path: str | os.PathLike | None = None,
    paired: tuple[str, str] | None = None,
    eval_data: str | os.PathLike | Any | None = None,
    eval_split: str | None = None,
    options: Mapping[int, Any] | None = None,
) -> TableResult:
    """Load runs (``MODEL=DIR`` specs and/or a ``ROOT/MODEL/REPEAT`` tree), build the table and the comparisons.

    ``compare`` entries are ``MODEL=PUBLISHED_MODEL``; with ``compare_published_names`` a model named exactly like
    a published row is compared too. ``paired`` = (model a, model b) adds a - b. ``eval_data`` (the eval set),
    or ``options`` already read from it, supplies the options of records written without them (the original
    recipe's result files).
    """
    pairs = parse_run_specs(run_specs)
    if runs_root is not None:
        pairs += discover_runs(runs_root)
    if not pairs:
        raise AnalysisError("no runs given; pass --run MODEL=DIR (repeatable) or --runs-root ROOT")
    if options is None and eval_data is not None:
        options = eval_options(eval_data, eval_split)
    models = load_runs(pairs, grading_mode, options)
    table = build_table(
        models, n_resamples=n_resamples, alpha=alpha, seed=seed, cluster_by_image=cluster_by_image,
        grading_mode=grading_mode,
    )
    comparison = None
    mapping = dict(spec.split("=", 1) for spec in compare if "=" in spec)
    bad = [spec for spec in compare if "=" not in spec]
    if bad:
        raise AnalysisError(f"--compare {bad[0]!r}: expected MODEL=PUBLISHED_MODEL")
    if mapping or compare_published_names:
        published = load_published(published_path)
        check_published_averages(published)
        unknown = [m for m in mapping if m not in {r.model for r in table.rows}]
        if unknown:
            raise AnalysisError(f"--compare {unknown[0]}=...: no run named {unknown[0]!r}; models: "
                                f"{[r.model for r in table.rows]}")
        if not compare_published_names:
            published_rows = {mapping[m] for m in mapping}
            published = {k: v for k, v in published.items() if k in published_rows}
        comparison = compare_published(table, published, mapping) or None
    paired_result = None
    if paired:
        by_name = {m.name: m for m in models}
        for name in paired:
            if name not in by_name:
                raise AnalysisError(f"--paired {paired[0]} {paired[1]}: no run named {name!r}; models: {list(by_name)}")
        paired_result = {
            "a": paired[0],
            "b": paired[1],
            "results": paired_comparison(
                by_name[paired[0]], by_name[paired[1]], n_resamples=n_resamples, alpha=alpha, seed=seed,
                cluster_by_image=cluster_by_image,
            ),
        }
    return TableResult(table, models, comparison, paired_result)
