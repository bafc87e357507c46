"""The SFT(PMC) set: the training rows joined with the teacher's first strict-correct reasoning (docs/data.md).

    python data_process/merge_reasoning.py --dataset_name UCSC-VLAA/MedVLThinker-pmc_vqa \
        --records outputs/teacher/pmc_vqa --output data/local/pmc_vqa-reasoning

Rows are shuffled with seed 42; per row the first of its rollouts that the strict grader accepts and that has a
<think> body gives ``reasoning``. Rows without one are dropped and listed by dataset_index in
``<output>.report.json``. The output is unified rows (convert_sft_format.py makes the SFT conversations).
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.prepare import reasoning


@cli.command()
@click.option("--dataset_name", default=reasoning.DEFAULT_TRAIN_SET, show_default=True,
              help="The training set the teacher answered: Hub name, save_to_disk directory, .parquet or .jsonl.")
@click.option("--split", default=reasoning.TEACHER_SPLIT, show_default=True, help="Split, for Hub data sets.")
@click.option("--records", required=True,
              help="The teacher run's --output_dir (generate_reasoning.py), or its eval_results.jsonl.")
@click.option("--output", required=True, help="Output: a save_to_disk directory, or a .parquet file.")
@click.option("--seed", type=int, default=reasoning.SHUFFLE_SEED, show_default=True, help="Seed of the row shuffle.")
@click.option("--num_rollouts", type=int, default=reasoning.TEACHER_SAMPLING.n, show_default=True,
              help="Rollouts every record must have (0: any).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def main(dataset_name, split, records, output, seed, num_rollouts, overwrite):
    report = reasoning.build_reasoning_set(dataset_name, records, output, split=split, seed=seed,
                                           num_rollouts=num_rollouts or None, overwrite=overwrite)
    click.echo(f"{report.summary()}; saved to {output}, report in {output}.report.json")


if __name__ == "__main__":
    main()
