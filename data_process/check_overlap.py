"""Overlap between a training set and the evaluation set: exact and near-duplicate questions, identical and
near-duplicate images (perceptual hashes).

    python data_process/check_overlap.py --train data/local/pmc_vqa_train \
        --eval UCSC-VLAA/MedVLThinker-Eval --num_proc 8 --output_dir outputs/overlap/pmc_vqa \
        --write_train_without data/local/pmc_vqa_train_clean

Prints a table per benchmark (eval rows with a match of each kind) and example pairs, and writes
overlap_report.json, overlap_matches.jsonl (every matching pair with both questions), overlap_table.txt and
overlap_examples.json to --output_dir; --write_train_without saves the training set without every row flagged by
any kind (docs/experiments.md).
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.curate.near_duplicates import DEFAULT_IMAGE_THRESHOLD, MAX_IMAGE_THRESHOLD, check_image_threshold
from medvlthinker.curate.overlap import find_overlap, without_flagged, write_overlap
from medvlthinker.data import load_unified, save_unified


@cli.command()
@click.option("--train", "train_source", required=True, help="Training set: Hub name or local path (unified schema).")
@click.option("--train_split", default="train", show_default=True)
@click.option("--eval", "eval_source", default="UCSC-VLAA/MedVLThinker-Eval", show_default=True, help="Evaluation set.")
@click.option("--eval_split", default="test", show_default=True)
@click.option("--threshold", type=float, default=0.8, show_default=True, help="Character n-gram Jaccard of a near-duplicate question.")
@click.option("--ngram", type=click.IntRange(min=1), default=4, show_default=True, help="Character n-gram length.")
@click.option("--with_options", is_flag=True, help="Compare the question followed by its option texts.")
@click.option("--images/--no_images", default=True, show_default=True, help="Also look for identical images (pixel hash).")
@click.option("--near_images/--no_near_images", default=True, show_default=True,
              help="Also look for near-duplicate images (64-bit pHash within --image_threshold bits).")
@click.option("--image_threshold", type=int, default=DEFAULT_IMAGE_THRESHOLD, show_default=True,
              help=f"Most pHash bits (of 64) two near-duplicate images may differ in, 0..{MAX_IMAGE_THRESHOLD}.")
@click.option("--num_proc", type=click.IntRange(min=1), default=1, show_default=True, help="Processes hashing images.")
@click.option("--output_dir", required=True, help="Where the report, the matches and the table go.")
@click.option("--write_train_without", default=None, type=click.Path(file_okay=False),
              help="Also save the training set without the rows flagged by any kind here (save_to_disk).")
def main(train_source, train_split, eval_source, eval_split, threshold, ngram, with_options, images, near_images,
         image_threshold, num_proc, output_dir, write_train_without):
    check_image_threshold(image_threshold)
    train = load_unified(train_source, train_split, validate=False)
    eval_ds = load_unified(eval_source, eval_split, validate=False)
    click.echo(f"train {train_source}: {len(train)} rows; eval {eval_source}: {len(eval_ds)} rows")
    report = find_overlap(
        train, eval_ds, threshold=threshold, ngram=ngram, with_options=with_options, compare_images=images,
        near_images=near_images, image_threshold=image_threshold, num_proc=num_proc,
    )
    paths = write_overlap(report, output_dir)
    click.echo("eval rows with a match of each kind:")
    click.echo(report.table())
    if report.matches:
        click.echo("examples:")
        click.echo(report.examples_text())
    click.echo(f"{len(report.matches)} matching pairs; details in {paths['matches']}")
    if write_train_without:
        kept = without_flagged(train, report)
        save_unified(kept, write_train_without)
        click.echo(f"wrote {len(kept)} of {len(train)} training rows (without the {len(train) - len(kept)} flagged) "
                   f"to {write_train_without}")


if __name__ == "__main__":
    main()
