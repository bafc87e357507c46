"""The statistics of the paper table: per (model, column) the mean over repeats, the spread across them and a
bootstrap interval over rows (over images where known); the comparison with the published numbers; the paired
comparison of two models. The resampling itself is :mod:`medvlthinker.stats`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medvlthinker import grading, stats
from medvlthinker.analysis import AnalysisError
from medvlthinker.analysis.published import average_of
from medvlthinker.analysis.runs import ModelRuns, image_cluster
from medvlthinker.benchmarks import AVG, BENCHMARKS, COLUMNS


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
