"""The paper table (PMC, MMMU, MedX-M, PathVQA, SLAKE, VQA-Rad, Avg.) from eval output directories.

Greedy repeats of one model are grouped by name: give ``--run MODEL=DIR`` once per repeat, or ``--runs-root ROOT``
with the layout ``ROOT/MODEL/REPEAT/eval_results.jsonl``. Writes table.md, table.tex, table.tsv and table.json
into --output-dir and prints the Markdown.

    python analysis/make_tables.py --runs-root outputs/eval --compare base=Qwen2.5-VL-3B-Instruct \\
        --paired rl_m23k base --output-dir outputs/tables
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.analysis import tables


@cli.command(context_settings={"show_default": True})
@click.option("--run", "runs", multiple=True, metavar="MODEL=DIR",
              help="An eval --output_dir of MODEL; repeat the option (same MODEL) for each greedy repeat.")
@click.option("--runs-root", type=click.Path(file_okay=False), help="A tree ROOT/MODEL/REPEAT/ of eval outputs.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False), help="Where the tables go.")
@click.option("--grading", type=click.Choice(tables.GRADINGS), default="regrade",
              help="regrade: re-grade output_text as the published table did; strict: the pass-rate grader; "
                   "recorded: keep the grades in the files.")
@click.option("--n-resamples", default=2000, help="Bootstrap resamples per interval.")
@click.option("--alpha", default=0.05, help="1 - confidence level of the intervals.")
@click.option("--seed", default=0, help="Bootstrap seed.")
@click.option("--no-cluster", is_flag=True, help="Resample rows, not images (default: cluster by misc.image_id).")
@click.option("--compare", multiple=True, metavar="MODEL=PUBLISHED",
              help="Compare MODEL with a published row (names as in medvlthinker/resources/published_results.csv).")
@click.option("--published", type=click.Path(dir_okay=False), default=None,
              help="Published results CSV (default: the paper's, shipped with the package).")
@click.option("--paired", nargs=2, metavar="A B", default=None, help="Paired comparison A - B on shared rows.")
@click.option("--eval-data", default=None,
              help="The eval set (Hub name or local path) whose options fill in records without them (result files "
                   "of the original recipe).")
@click.option("--eval-split", default=None, help="Split of --eval-data (default: its only one, else test).")
def main(runs, runs_root, output_dir, grading, n_resamples, alpha, seed, no_cluster, compare, published, paired,
         eval_data, eval_split):
    try:
        result = tables.make_tables(
            runs, runs_root, grading_mode=grading, n_resamples=n_resamples, alpha=alpha, seed=seed,
            cluster_by_image=not no_cluster, compare=compare, published_path=published, paired=paired,
            eval_data=eval_data, eval_split=eval_split,
        )
    except tables.AnalysisError as exc:
        raise click.ClickException(str(exc)) from None
    paths = tables.write_tables(result.table, output_dir, result.comparison, result.paired)
    click.echo(tables.to_markdown(result.table, result.comparison, result.paired))
    click.echo("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
