"""The paper table (PMC, MMMU, MedX-M, PathVQA, SLAKE, VQA-Rad, Avg.) from eval output directories.

Greedy repeats of one model are grouped by name: give ``--run MODEL=DIR`` once per repeat, or ``--runs_root ROOT``
with the layout ``ROOT/MODEL/REPEAT/eval_results.jsonl``. Writes table.md, table.tex, table.tsv and table.json
into --output_dir and prints the Markdown.

    python analysis/make_tables.py --runs_root outputs/eval --compare base=Qwen2.5-VL-3B-Instruct \\
        --paired rl_m23k base --output_dir outputs/tables
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.analysis import tables
from medvlthinker.analysis.cli_options import COMPARISON_OPTIONS, RUN_OPTIONS, flag, with_options


@cli.command(context_settings={"show_default": True})
@with_options(RUN_OPTIONS, COMPARISON_OPTIONS)
@flag("output_dir", required=True, type=click.Path(file_okay=False), help="Where the tables go.")
@flag("alpha", default=0.05, help="1 - confidence level of the intervals.")
@flag("seed", default=0, help="Bootstrap seed.")
@flag("no_cluster", is_flag=True, help="Resample rows, not images (default: cluster by misc.image_id).")
@flag("published", type=click.Path(dir_okay=False), default=None,
      help="Published results CSV (default: the paper's, shipped with the package).")
def main(runs, runs_root, grading, eval_data, eval_split, compare, paired, n_resamples, output_dir, alpha, seed,
         no_cluster, published):
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
