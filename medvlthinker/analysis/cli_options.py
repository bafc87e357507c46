"""The command-line options of the analysis scripts (make_tables, make_plots, make_report, make_ablation_tables),
declared once, and the settings of :func:`~medvlthinker.analysis.tables.make_tables` and
:func:`~medvlthinker.analysis.report.make_report` built from them.

Flags are spelled in the project's snake_case (``--output_dir``). The dashed spelling (``--output-dir``) is
deprecated: it still works and prints a warning naming the snake_case flag (:class:`Command`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from medvlthinker import cli
from medvlthinker.analysis.plots import PASS_AT_K_GRADING
from medvlthinker.analysis.report import ReportSettings
from medvlthinker.analysis.tables import TableSettings
from medvlthinker.inference.regrade import GRADINGS
from medvlthinker.inference.settings import PASS_RATE


def flag(name: str, *, dest: str | None = None, **kwargs: Any) -> Callable:
    """``click.option`` for ``--name``; the value goes to ``dest`` (default ``name``)."""
    return click.option(f"--{name}", dest or name, **kwargs)


class Command(cli.Command):
    """An analysis script: a dashed spelling of one of its flags (``--output-dir``) is read as the snake_case flag
    (``--output_dir``), with a deprecation warning on stderr."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        dashed = {opt.replace("_", "-"): opt for param in self.params for opt in param.opts
                  if opt.startswith("--") and "_" in opt}
        spelled = []
        for position, arg in enumerate(args):
            if arg == "--":
                spelled += args[position:]
                break
            name, equals, value = arg.partition("=")
            if name in dashed:
                click.echo(f"warning: {name} is deprecated; spell it {dashed[name]}", err=True)
                arg = dashed[name] + equals + value
            spelled.append(arg)
        return super().parse_args(ctx, spelled)


def command() -> Callable[[Callable], click.Command]:
    """``cli.command`` of an analysis script: one-line errors, defaults on ``--help``, dashed flags deprecated."""
    return cli.command(cls=Command, context_settings={"show_default": True})


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


def table_settings(params: Mapping[str, Any]) -> TableSettings:
    """The table's settings from the parsed flags of ``analysis/make_tables.py`` (or of a script sharing them: a
    flag the script lacks keeps the settings' default)."""
    defaults = TableSettings()
    return TableSettings(
        run_specs=tuple(params.get("runs", ())), runs_root=params.get("runs_root"),
        grading_mode=params.get("grading", defaults.grading_mode),
        n_resamples=params.get("n_resamples", defaults.n_resamples), alpha=params.get("alpha", defaults.alpha),
        seed=params.get("seed", defaults.seed), cluster_by_image=not params.get("no_cluster", False),
        compare=tuple(params.get("compare", ())), published_path=params.get("published"),
        paired=tuple(params["paired"]) if params.get("paired") else None, eval_data=params.get("eval_data"),
        eval_split=params.get("eval_split"))


def report_settings(params: Mapping[str, Any]) -> ReportSettings:
    """The report's settings from the parsed flags of ``analysis/make_report.py``."""
    return ReportSettings(
        output_dir=params["output_dir"], table=table_settings(params),
        sampling_runs=tuple(params["sampling_run"]), pass_rate_dir=params["pass_rate_dir"],
        pass_rate_rollouts=params["pass_rate_rollouts"], published_models=tuple(params["published_model"]),
        pass_at_k_grading=params["pass_at_k_grading"], drop_unconverted=params["majority_drops_unconverted"],
        samples_per_benchmark=params["samples_per_benchmark"], title=params["title"], rl_log=params["rl_log"],
        reliance_runs=tuple(params["reliance_run"]))
