"""The command-line options of the analysis scripts (make_tables, make_plots, make_report), declared once.

Flags are spelled in the project's snake_case (``--output_dir``); the dashed spelling these scripts had before
(``--output-dir``) is still accepted, so older command lines and notes keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from medvlthinker.analysis.plots import PASS_AT_K_GRADING
from medvlthinker.analysis.runs import GRADINGS
from medvlthinker.inference.settings import PASS_RATE


def flag(name: str, *, dest: str | None = None, **kwargs: Any) -> Callable:
    """``click.option`` for ``--name``, also accepting ``--na-me``; the value goes to ``dest`` (default ``name``)."""
    dashed = name.replace("_", "-")
    spellings = [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])
    return click.option(*spellings, dest or name, **kwargs)


RUN_OPTIONS = (
    flag("run", dest="runs", multiple=True, metavar="MODEL=DIR",
         help="An eval --output_dir of MODEL; repeat the option (same MODEL) for each greedy repeat."),
    flag("runs_root", type=click.Path(file_okay=False), help="A tree ROOT/MODEL/REPEAT/ of eval outputs."),
    flag("grading", type=click.Choice(GRADINGS), default="regrade",
         help="How rollouts are graded for the table, the radar and the metrics@n bars (regrade: re-grade "
              "output_text as the published table did; strict: the pass-rate grader; recorded: keep the grades in "
              "the files)."),
    flag("eval_data", default=None,
         help="The eval set (Hub name or local path): options for records written without them (result files of "
              "the original recipe), and the report's image thumbnails."),
    flag("eval_split", default=None, help="Split of --eval_data (default: its only one, else test)."),
)
"""Which runs to read and how to grade them (every analysis script)."""

FIGURE_OPTIONS = (
    flag("published_model", multiple=True, help="A published row to draw on the radar, e.g. GPT-4o."),
    flag("sampling_run", multiple=True, metavar="MODEL=DIR",
         help="Sampled eval output (n > 1 rollouts) for the metrics@n bars and the pass@k curves."),
    flag("pass_rate_dir", type=click.Path(exists=True), help="Pass-rate output for the pass-count plot."),
    flag("pass_rate_rollouts", type=click.IntRange(min=1), default=PASS_RATE.n, help="Rollouts per question of the pass-rate run."),
    flag("pass_at_k_grading", type=click.Choice(GRADINGS), default=PASS_AT_K_GRADING,
         help="How rollouts are graded for the pass@k curves (recorded: the strict grades of generation, as the "
              "original; regrade grades them like the table)."),
    flag("majority_drops_unconverted", is_flag=True,
         help="Only predictions that map to an option letter vote in majority@n (the original counts every one)."),
)
"""The inputs of the figures (make_plots, make_report)."""

COMPARISON_OPTIONS = (
    flag("compare", multiple=True, metavar="MODEL=PUBLISHED",
         help="Compare MODEL with a published row (names as in medvlthinker/resources/published_results.csv)."),
    flag("paired", nargs=2, metavar="A B", default=None, help="Paired comparison A - B on shared rows."),
    flag("n_resamples", default=2000, help="Bootstrap resamples per interval."),
)
"""The table's comparisons and intervals (make_tables, make_report)."""


def with_options(*groups: tuple[Callable, ...]) -> Callable[[Callable], Callable]:
    """Add the options of ``groups`` to a click command, in their order on ``--help``."""
    def decorate(command: Callable) -> Callable:
        for group in reversed(groups):
            for option in reversed(group):
                command = option(command)
        return command

    return decorate
