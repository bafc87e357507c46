"""The command-line options analysis/make_plots.py and analysis/make_report.py share, declared once."""

from __future__ import annotations

from collections.abc import Callable

import click

from medvlthinker.analysis.plots import PASS_AT_K_GRADING
from medvlthinker.analysis.runs import GRADINGS
from medvlthinker.inference.settings import PASS_RATE

FIGURE_OPTIONS = (
    click.option("--run", "runs", multiple=True, metavar="MODEL=DIR",
                 help="Greedy eval output of MODEL; repeat the option (same MODEL) for each greedy repeat."),
    click.option("--runs-root", type=click.Path(file_okay=False), help="A tree ROOT/MODEL/REPEAT/ of eval outputs."),
    click.option("--published-model", multiple=True, help="A published row to draw on the radar, e.g. GPT-4o."),
    click.option("--sampling-run", multiple=True, metavar="MODEL=DIR",
                 help="Sampled eval output (n > 1 rollouts) for the metrics@n bars and the pass@k curves."),
    click.option("--pass-rate-dir", type=click.Path(exists=True), help="Pass-rate output for the pass-count plot."),
    click.option("--pass-rate-rollouts", default=PASS_RATE.n, help="Rollouts per question of the pass-rate run."),
    click.option("--grading", type=click.Choice(GRADINGS), default="regrade",
                 help="How rollouts are graded for the table, the radar and the metrics@n bars (regrade: as the "
                      "published table; strict: the pass-rate grader; recorded: the grades in the files)."),
    click.option("--pass-at-k-grading", type=click.Choice(GRADINGS), default=PASS_AT_K_GRADING,
                 help="How rollouts are graded for the pass@k curves (recorded: the strict grades of generation, as "
                      "the original; regrade grades them like the table)."),
    click.option("--majority-drops-unconverted", is_flag=True,
                 help="Only predictions that map to an option letter vote in majority@n (the original counts every "
                      "one)."),
    click.option("--eval-data", default=None,
                 help="The eval set (Hub name or local path): options for records written without them, and the "
                      "report's image thumbnails."),
    click.option("--eval-split", default=None, help="Split of --eval-data (default: its only one, else test)."),
)


def figure_options(command: Callable) -> Callable:
    """Add :data:`FIGURE_OPTIONS` to a click command, in their order on ``--help``."""
    for option in reversed(FIGURE_OPTIONS):
        command = option(command)
    return command
