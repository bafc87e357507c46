"""The paper table (docs/protocol.md sections 5, 10, 11) from eval output directories: one call for the scripts.

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
(:func:`medvlthinker.stats.bootstrap_average_ci`).

Records are re-graded from their ``output_text`` in the ``regrade`` mode by default, because the published table
uses that grader while the eval writes strict grades (docs/protocol.md section 3); ``grading="recorded"`` keeps the
grades as written.

Where each part lives: the benchmarks in :mod:`medvlthinker.benchmarks`; reading and grading runs in
:mod:`~medvlthinker.analysis.runs`; the published numbers in :mod:`~medvlthinker.analysis.published`; the cells and
comparisons in :mod:`~medvlthinker.analysis.paper_table`; the renderers in :mod:`~medvlthinker.analysis.render`.

>>> [c.label for c in BENCHMARKS]
['PMC', 'MMMU', 'MedX-M', 'PathVQA', 'SLAKE', 'VQA-Rad']
>>> check_published_averages(load_published())  # the paper's Avg. column follows from its six columns
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medvlthinker.analysis import AnalysisError
from medvlthinker.analysis.paper_table import PaperTable, build_table, compare_published, paired_comparison
from medvlthinker.analysis.published import check_published_averages, load_published
from medvlthinker.analysis.runs import ModelRuns, discover_runs, load_runs, parse_run_specs
from medvlthinker.benchmarks import BENCHMARKS
from medvlthinker.inference.regrade import eval_options

LABEL_OF = {b.dataset_name: b.label for b in BENCHMARKS}


@dataclass(frozen=True)
class TableSettings:
    """What :func:`make_tables` reads and how: the flags of ``analysis/make_tables.py``
    (:func:`medvlthinker.analysis.cli_options.table_settings` builds it from them)."""

    run_specs: Sequence[str] = ()
    """``MODEL=DIR`` eval output directories (``--run``); one per greedy repeat of MODEL."""
    runs_root: str | os.PathLike | None = None
    """A ``ROOT/MODEL/REPEAT/`` tree of eval outputs (``--runs_root``)."""
    grading_mode: str = "regrade"
    """``regrade`` (the published table's grader), ``strict`` or ``recorded`` (``--grading``)."""
    n_resamples: int = 2000
    """Bootstrap resamples per interval."""
    alpha: float = 0.05
    """1 - the confidence level of the intervals."""
    seed: int = 0
    """Bootstrap seed."""
    cluster_by_image: bool = True
    """Resample images (``misc.image_id``), not rows (``--no_cluster`` turns it off)."""
    compare: Sequence[str] = ()
    """``MODEL=PUBLISHED_MODEL`` comparisons with the paper's rows."""
    compare_published_names: bool = True
    """Also compare a model named exactly like a published row."""
    published_path: str | os.PathLike | None = None
    """The published results CSV (``--published``; default: the paper's)."""
    paired: tuple[str, str] | None = None
    """``(model a, model b)``: the paired comparison a - b on shared rows."""
    eval_data: str | os.PathLike | Any | None = None
    """The eval set (a source ``load_unified`` reads, or a Dataset): options of records written without them."""
    eval_split: str | None = None
    """Split of ``eval_data``."""


@dataclass
class TableResult:
    """What :func:`make_tables` computed: the table, the comparisons, the loaded runs."""

    table: PaperTable
    models: list[ModelRuns]
    comparison: dict[str, dict[str, Any]] | None
    paired: dict[str, Any] | None


def make_tables(settings: TableSettings, *, options: Mapping[int, Any] | None = None) -> TableResult:
    """Load runs (``MODEL=DIR`` specs and/or a ``ROOT/MODEL/REPEAT`` tree), build the table and the comparisons.

    ``settings.eval_data`` (the eval set), or ``options`` already read from it, supplies the options of records
    written without them (the original recipe's result files).
    """
    s = settings
    pairs = parse_run_specs(s.run_specs)
    if s.runs_root is not None:
        pairs += discover_runs(s.runs_root)
    if not pairs:
        raise AnalysisError("no runs given; pass --run MODEL=DIR (repeatable) or --runs_root ROOT")
    if options is None and s.eval_data is not None:
        options = eval_options(s.eval_data, s.eval_split)
    models = load_runs(pairs, s.grading_mode, options)
    table = build_table(
        models, n_resamples=s.n_resamples, alpha=s.alpha, seed=s.seed, cluster_by_image=s.cluster_by_image,
        grading_mode=s.grading_mode,
    )
    comparison = None
    mapping = dict(spec.split("=", 1) for spec in s.compare if "=" in spec)
    bad = [spec for spec in s.compare if "=" not in spec]
    if bad:
        raise AnalysisError(f"--compare {bad[0]!r}: expected MODEL=PUBLISHED_MODEL")
    if mapping or s.compare_published_names:
        published = load_published(s.published_path)
        check_published_averages(published)
        unknown = [m for m in mapping if m not in {r.model for r in table.rows}]
        if unknown:
            raise AnalysisError(f"--compare {unknown[0]}=...: no run named {unknown[0]!r}; models: "
                                f"{[r.model for r in table.rows]}")
        if not s.compare_published_names:
            published_rows = {mapping[m] for m in mapping}
            published = {k: v for k, v in published.items() if k in published_rows}
        comparison = compare_published(table, published, mapping) or None
    paired_result = None
    paired = s.paired
    if paired:
        by_name = {m.name: m for m in models}
        for name in paired:
            if name not in by_name:
                raise AnalysisError(f"--paired {paired[0]} {paired[1]}: no run named {name!r}; models: {list(by_name)}")
        paired_result = {
            "a": paired[0],
            "b": paired[1],
            "results": paired_comparison(
                by_name[paired[0]], by_name[paired[1]], n_resamples=s.n_resamples, alpha=s.alpha, seed=s.seed,
                cluster_by_image=s.cluster_by_image,
            ),
        }
    return TableResult(table, models, comparison, paired_result)
