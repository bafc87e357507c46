"""The paper's figures as PNG and PDF: radar of the six benchmarks, metrics@n bars, pass@k curves, pass-count
distribution. Each is drawn when its input is given.

    python analysis/make_plots.py --runs_root outputs/eval --published_model Qwen2.5-VL-3B-Instruct \\
        --sampling_run base=outputs/sampling/base --pass_rate_dir outputs/pass_rate/m23k --output_dir outputs/plots

--run / --runs_root: greedy eval outputs (grouped by model as in make_tables.py) for the radar.
--sampling_run MODEL=DIR: a run with n > 1 rollouts per row (the paper: temperature 0.5, n=5 for metrics@5 and
n=64 for pass@k) for the metrics@n bars (graded with --grading) and the pass@k curves (graded with
--pass_at_k_grading; the original used the strict grades recorded at generation).
--pass_rate_dir: the pass-rate run (n=16) of the curation stage.
"""

from __future__ import annotations

from dataclasses import replace

import click

from medvlthinker.analysis import plots, tables
from medvlthinker.analysis.cli_options import FIGURE_OPTIONS, RUN_OPTIONS, command, flag, table_settings, with_options
from medvlthinker.analysis.published import published_rows
from medvlthinker.analysis.runs import load_sampling_runs
from medvlthinker.inference.regrade import eval_options


@command()
@with_options(RUN_OPTIONS, FIGURE_OPTIONS)
@flag("output_dir", required=True, type=click.Path(file_okay=False), help="Where the figures go.")
def main(runs, runs_root, grading, eval_data, eval_split, published_model, sampling_run, pass_rate_dir,
         pass_rate_rollouts, pass_at_k_grading, majority_drops_unconverted, output_dir):
    table = None
    if runs or runs_root:
        # The radar needs the means only, so one bootstrap resample is enough here.
        settings = table_settings(dict(runs=runs, runs_root=runs_root, grading=grading, eval_data=eval_data,
                                       eval_split=eval_split))
        table = tables.make_tables(replace(settings, n_resamples=1, compare_published_names=False)).table
    published = published_rows(published_model)
    sampling = load_sampling_runs(sampling_run)
    written = plots.make_plots(
        output_dir, table=table, published=published, sampling_runs=sampling, pass_rate_dir=pass_rate_dir,
        pass_rate_rollouts=pass_rate_rollouts, metrics_grading=grading, pass_at_k_grading=pass_at_k_grading,
        drop_unconverted=majority_drops_unconverted,
        options=eval_options(eval_data, eval_split) if sampling and eval_data else None,
    )
    if not written:
        raise click.ClickException("nothing to plot; give --run/--runs_root, --sampling_run or --pass_rate_dir")
    for name, paths in written.items():
        click.echo(f"{name}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
