"""One self-contained HTML report (table, figures, sample browser) plus the tables and figures it shows.

    python analysis/make_report.py --runs-root outputs/eval --eval-data UCSC-VLAA/MedVLThinker-Eval \\
        --compare base=Qwen2.5-VL-3B-Instruct --published-model Qwen2.5-VL-3B-Instruct --output-dir outputs/report

Writes OUTPUT_DIR/report.html, OUTPUT_DIR/tables/table.{md,tex,tsv,json} and OUTPUT_DIR/plots/*.{png,pdf}.
Runs are grouped by model as in make_tables.py (--run MODEL=DIR repeated per greedy repeat, or --runs-root
ROOT/MODEL/REPEAT/). --eval-data (any source load_unified reads) supplies the image thumbnails.
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.analysis import plots, report, tables


@cli.command(context_settings={"show_default": True})
@click.option("--run", "runs", multiple=True, metavar="MODEL=DIR", help="Greedy eval output of MODEL (repeatable).")
@click.option("--runs-root", type=click.Path(file_okay=False), help="A tree ROOT/MODEL/REPEAT/ of eval outputs.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where everything goes.")
@click.option("--eval-data", default=None, help="The eval set (Hub name or local path) for image thumbnails.")
@click.option("--eval-split", default=None, help="Split of --eval-data (default: its only one, else test).")
@click.option("--sampling-run", multiple=True, metavar="MODEL=DIR", help="Sampled run (n > 1) for metrics@n, pass@k.")
@click.option("--pass-rate-dir", type=click.Path(exists=True), help="Pass-rate output for the pass-count plot.")
@click.option("--pass-rate-rollouts", default=16, help="Rollouts per question of the pass-rate run.")
@click.option("--published-model", multiple=True, help="A published row to draw on the radar.")
@click.option("--compare", multiple=True, metavar="MODEL=PUBLISHED", help="Compare MODEL with a published row.")
@click.option("--paired", nargs=2, metavar="A B", default=None, help="Paired comparison A - B.")
@click.option("--grading", type=click.Choice(tables.GRADINGS), default="regrade",
              help="How rollouts are graded for the table, the radar and the metrics@n bars.")
@click.option("--pass-at-k-grading", type=click.Choice(tables.GRADINGS), default=plots.PASS_AT_K_GRADING,
              help="How rollouts are graded for the pass@k curves (recorded: the strict grades of generation, as the "
                   "original).")
@click.option("--majority-drops-unconverted", is_flag=True,
              help="Only predictions that map to an option letter vote in majority@n (the original counts every one).")
@click.option("--n-resamples", default=2000, help="Bootstrap resamples per interval.")
@click.option("--seed", default=0, help="Seed of the bootstrap and of the sample choice.")
@click.option("--samples-per-benchmark", default=8, help="Rows per benchmark and model in the sample browser.")
@click.option("--rl-log", type=click.Path(exists=True, dir_okay=False),
              help="verl's console log of an RL run: adds the mean-reward curve.")
@click.option("--title", default="MedVLThinker evaluation report", help="Report title.")
def main(runs, runs_root, output_dir, eval_data, eval_split, sampling_run, pass_rate_dir, pass_rate_rollouts,
         published_model, compare, paired, grading, pass_at_k_grading, majority_drops_unconverted, n_resamples, seed,
         samples_per_benchmark, rl_log, title):
    out = report.make_report(
        output_dir, run_specs=runs, runs_root=runs_root, eval_data=eval_data, eval_split=eval_split,
        sampling_runs=sampling_run, pass_rate_dir=pass_rate_dir, pass_rate_rollouts=pass_rate_rollouts,
        published_models=published_model, compare=compare, paired=paired, grading_mode=grading,
        pass_at_k_grading=pass_at_k_grading, drop_unconverted=majority_drops_unconverted,
        n_resamples=n_resamples, seed=seed, samples_per_benchmark=samples_per_benchmark, title=title, rl_log=rl_log,
    )
    click.echo(f"report: {out['report']}")
    click.echo(f"tables: {out['tables']['md']} (also .tex, .tsv, .json)")
    for name, paths in out["plots"].items():
        click.echo(f"plot {name}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
