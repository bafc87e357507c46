"""Unified data set -> TRL SFT data set (conversational prompt-completion, images kept), saved with save_to_disk.

Text SFT (m23k):
    python data_process/convert_sft_format.py UCSC-VLAA/MedVLThinker-m23k-tokenized data/sft/m23k --split train
Image-text SFT (PMC-VQA with GPT-4o reasoning):
    python data_process/convert_sft_format.py UCSC-VLAA/MedVLThinker-pmc_vqa-gpt_4o_reasoning-tokenized \
        data/sft/pmc_vqa_reasoning --split train
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.converters import conversion_options


@cli.command()
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False))
@conversion_options
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_DIR.")
def main(source, out_dir, split, subset, size, resize_pmc, num_proc, keep_image_bytes, allow_outside_images,
         overwrite):
    """Convert SOURCE (Hub name, save_to_disk dir, .parquet or .jsonl in the unified schema) into OUT_DIR.

    Every row is validated, its images decoded, before OUT_DIR is written; a bad row stops the run naming it, and an
    existing OUT_DIR is kept.
    """
    from medvlthinker.converters.sft_format import convert_to_sft, write_sft_dataset
    from medvlthinker.data import load_unified
    from medvlthinker.staging import check_writable

    check_writable(out_dir, overwrite)  # before any work

    ds = load_unified(source, split, subset=list(subset) or None, size=size, num_proc=num_proc,
                      allow_outside_images=allow_outside_images)
    sft = convert_to_sft(ds, resize_pmc=resize_pmc, num_proc=num_proc, keep_image_bytes=keep_image_bytes)
    path = write_sft_dataset(sft, out_dir, overwrite=overwrite)
    n_images = sum(any(part["type"] == "image" for part in p[0]["content"]) for p in sft["prompt"])
    click.echo(f"wrote {len(sft)} SFT examples ({n_images} with images) to {path}")


if __name__ == "__main__":
    main()
