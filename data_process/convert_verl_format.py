"""Unified data set -> verl RL parquet (string prompt with <image> placeholders, images as bytes, reward fields).

RL(m23k), pass-rate filtered and ordered easy to hard:
    python data_process/convert_verl_format.py data/curated/m23k_easy_to_hard data/verl/m23k/train.parquet
RL(PMC):
    python data_process/convert_verl_format.py data/curated/pmc_vqa_easy_to_hard data/verl/pmc_vqa/train.parquet
Validation file (PMC-VQA part of the evaluation set):
    python data_process/convert_verl_format.py UCSC-VLAA/MedVLThinker-Eval data/verl/eval_pmc_vqa/test.parquet \
        --split test --subset pmc_vqa --rl_split test
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.converters import conversion_options


@cli.command()
@click.argument("source")
@click.argument("out_parquet", type=click.Path(dir_okay=False))
@conversion_options
@click.option("--rl_split", default="train", show_default=True, help="Written to extra_info.split.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_PARQUET.")
def main(source, out_parquet, split, subset, size, rl_split, resize_pmc, num_proc, keep_image_bytes, allow_outside_images,
         overwrite):
    """Convert SOURCE (Hub name, save_to_disk dir, .parquet or .jsonl in the unified schema) into OUT_PARQUET.

    The row order of SOURCE is kept (curriculum runs read the file in order). Every row is validated, its images
    decoded, before OUT_PARQUET is written; a bad row stops the run naming it, and an existing OUT_PARQUET is kept.
    """
    from medvlthinker.converters.verl_format import check_verl_output, convert_to_verl, write_verl_parquet
    from medvlthinker.data import load_unified

    check_verl_output(out_parquet, overwrite)  # before any work: the output name and an existing file

    ds = load_unified(source, split, subset=list(subset) or None, size=size, num_proc=num_proc,
                      allow_outside_images=allow_outside_images)
    rl = convert_to_verl(ds, split=rl_split, resize_pmc=resize_pmc, num_proc=num_proc,
                         keep_image_bytes=keep_image_bytes)
    path = write_verl_parquet(rl, out_parquet, overwrite=overwrite)
    n_images = sum(1 for images in rl["images"] if images)
    click.echo(f"wrote {len(rl)} verl RL rows ({n_images} with images) to {path}")


if __name__ == "__main__":
    main()
