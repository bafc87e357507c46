"""The paper's figures as PNG and PDF: radar of the six benchmarks, metrics@n bars, pass@k curves, pass-count
distribution. Each is drawn when its input is given.

    python analysis/make_plots.py --runs-root outputs/eval --published-model Qwen2.5-VL-3B-Instruct \\
        --sampling-run base=outputs/sampling/base --pass-rate-dir outputs/pass_rate/m23k --output-dir outputs/plots

--run / --runs-root: greedy eval outputs (grouped by model as in make_tables.py) for the radar.
--sampling-run MODEL=DIR: a run with n > 1 rollouts per row (the paper: temperature 0.5, n=5 for metrics@5 and
n=64 for pass@k) for the metrics@n bars (graded with --grading) and the pass@k curves (graded with
--pass-at-k-grading; the original used the strict grades recorded at generation).
--pass-rate-dir: the pass-rate run (n=16) of the curation stage.
"""

from __future__ import annotations

import click

from medvlthinker.analysis import plots, tables


@click.command(context_settings={"show_default": True})
@click.option("--run", "runs", multiple=True, metavar="MODEL=DIR", help="Greedy eval output of MODEL (radar).")
@click.option("--runs-root", type=click.Path(file_okay=False), help="A tree ROOT/MODEL/REPEAT/ of eval outputs.")
@click.option("--published-model", multiple=True, help="A published row to draw on the radar, e.g. GPT-4o.")
@click.option("--sampling-run", multiple=True, metavar="MODEL=DIR", help="Sampled eval output (n > 1 rollouts).")
@click.option("--pass-rate-dir", type=click.Path(exists=True), help="Pass-rate output for the pass-count plot.")
@click.option("--pass-rate-rollouts", default=16, help="Rollouts per question of the pass-rate run.")
@click.option("--grading", type=click.Choice(tables.GRADINGS), default="regrade",
              help="How rollouts are graded for the radar and the metrics@n bars.")
@click.option("--pass-at-k-grading", type=click.Choice(tables.GRADINGS), default=plots.PASS_AT_K_GRADING,
              help="How rollouts are graded for the pass@k curves (recorded: the strict grades of generation, as the "
                   "original; regrade grades them like the table).")
@click.option("--majority-drops-unconverted", is_flag=True,
              help="Only predictions that map to an option letter vote in majority@n (the original counts every one).")
@click.option("--eval-data", default=None, help="The eval set whose options fill in records without them.")
@click.option("--eval-split", default=None, help="Split of --eval-data.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where the figures go.")
def main(runs, runs_root, published_model, sampling_run, pass_rate_dir, pass_rate_rollouts, grading,
         pass_at_k_grading, majority_drops_unconverted, eval_data, eval_split, output_dir):
    try:
        table = None
        if runs or runs_root:
            # The radar needs the means only, so one bootstrap resample is enough here.
            table = tables.make_tables(runs, runs_root, grading_mode=grading, n_resamples=1,
                                       compare_published_names=False, eval_data=eval_data,
                                       eval_split=eval_split).table
        published = tables.load_published()
        unknown = [m for m in published_model if m not in published]
        if unknown:
            raise tables.AnalysisError(f"--published-model {unknown[0]!r}: not a published row; use one of "
                                       f"{list(published)}")
        sampling = {name: tables.load_records(path) for name, path in tables.parse_run_specs(sampling_run)}
        written = plots.make_plots(
            output_dir, table=table, published={m: published[m] for m in published_model},
            sampling_runs=sampling, pass_rate_dir=pass_rate_dir, pass_rate_rollouts=pass_rate_rollouts,
            metrics_grading=grading, pass_at_k_grading=pass_at_k_grading,
            drop_unconverted=majority_drops_unconverted,
            options=tables.eval_options(eval_data, eval_split) if sampling and eval_data else None,
        )
    except tables.AnalysisError as exc:
        raise click.ClickException(str(exc)) from None
    if not written:
        raise click.ClickException("nothing to plot; give --run/--runs-root, --sampling-run or --pass-rate-dir")
    for name, paths in written.items():
        click.echo(f"{name}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
