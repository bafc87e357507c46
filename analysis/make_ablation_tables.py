"""The evaluation ablations' tables (docs/experiments.md): visual reliance (eval runs with --image_mode blank,
shuffled or none beside the as_is run) and think / answer-only (--instruction_prompt answer_only beside the
paper's prompt). Each run's args.json says which condition it is; give every run of a model under its name.
Writes visual_reliance.{md,json} and think_answer_only.{md,json} (the ones the runs hold) into --output_dir and
prints the Markdown.

    python analysis/make_ablation_tables.py --run sft=runs/sft --run sft=runs/sft_blank \\
        --run sft=runs/sft_shuffled --run sft=runs/sft_answer_only --output_dir outputs/ablations
"""

from __future__ import annotations

import click

from medvlthinker.analysis import AnalysisError, ablations
from medvlthinker.analysis.cli_options import RUN_OPTIONS, command, flag, with_options
from medvlthinker.inference.regrade import eval_options


@command()
@with_options(RUN_OPTIONS)
@flag("output_dir", required=True, type=click.Path(file_okay=False), help="Where the tables go.")
@flag("n_resamples", default=2000, help="Bootstrap resamples per interval.")
@flag("seed", default=0, help="Bootstrap seed.")
@flag("no_cluster", is_flag=True, help="Resample rows, not images (default: cluster by misc.image_id).")
def main(runs, runs_root, grading, eval_data, eval_split, output_dir, n_resamples, seed, no_cluster):
    if runs_root:
        raise click.UsageError("--runs_root: give each run as --run MODEL=DIR (its args.json says its condition)")
    try:
        options = eval_options(eval_data, eval_split) if eval_data else None
        written = ablations.write_ablation_tables(runs, output_dir, grading_mode=grading, options=options,
                                                  n_resamples=n_resamples, seed=seed,
                                                  cluster_by_image=not no_cluster)
    except AnalysisError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n\n".join(written.values()))


if __name__ == "__main__":
    main()
