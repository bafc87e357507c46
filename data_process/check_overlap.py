"""Overlap between a training set and the evaluation set: exact and near-duplicate questions, identical images.

    python data_process/check_overlap.py --train data/local/pmc_vqa_train \
        --eval UCSC-VLAA/MedVLThinker-Eval --output_dir outputs/overlap/pmc_vqa

Prints a table per benchmark (eval rows with a match of each kind) and writes overlap_report.json,
overlap_matches.jsonl (every matching pair with both questions) and overlap_table.txt to --output_dir.
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.data import load_unified
from medvlthinker.overlap import find_overlap, write_overlap


@cli.command()
@click.option("--train", "train_source", required=True, help="Training set: Hub name or local path (unified schema).")
@click.option("--train_split", default="train", show_default=True)
@click.option("--eval", "eval_source", default="UCSC-VLAA/MedVLThinker-Eval", show_default=True, help="Evaluation set.")
@click.option("--eval_split", default="test", show_default=True)
@click.option("--threshold", type=float, default=0.8, show_default=True, help="Character n-gram Jaccard of a near-duplicate question.")
@click.option("--ngram", type=int, default=4, show_default=True, help="Character n-gram length.")
@click.option("--with_options", is_flag=True, help="Compare the question followed by its option texts.")
@click.option("--images/--no_images", default=True, show_default=True, help="Also look for identical images (pixel hash).")
@click.option("--num_proc", type=int, default=1, show_default=True, help="Processes hashing images.")
@click.option("--output_dir", required=True, help="Where the report, the matches and the table go.")
def main(train_source, train_split, eval_source, eval_split, threshold, ngram, with_options, images, num_proc, output_dir):
    train = load_unified(train_source, train_split, validate=False)
    eval_ds = load_unified(eval_source, eval_split, validate=False)
    click.echo(f"train {train_source}: {len(train)} rows; eval {eval_source}: {len(eval_ds)} rows")
    report = find_overlap(
        train, eval_ds, threshold=threshold, ngram=ngram, with_options=with_options, compare_images=images,
        num_proc=num_proc,
    )
    paths = write_overlap(report, output_dir)
    click.echo("eval rows with a match of each kind:")
    click.echo(report.table())
    click.echo(f"{len(report.matches)} matching pairs; details in {paths['matches']}")


if __name__ == "__main__":
    main()
