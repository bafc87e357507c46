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


@cli.command()
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split of a Hub data set (e.g. train).")
@click.option("--subset", multiple=True, help="Keep only these dataset_name values (repeatable).")
@click.option("--size", type=int, default=None, help="Keep the first N rows (smoke runs).")
@click.option("--resize_pmc/--no_resize_pmc", default=False, show_default=True,
              help="Apply the PMC-VQA training-image resize rule (the released sets are already resized).")
@click.option("--num_proc", type=int, default=None, help="Worker processes for the conversion.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT_DIR.")
def main(source, out_dir, split, subset, size, resize_pmc, num_proc, overwrite):
    """Convert SOURCE (Hub name, save_to_disk dir, .parquet or .jsonl in the unified schema) into OUT_DIR.

    Every row is validated, its images decoded, before OUT_DIR is written; a bad row stops the run naming it, and an
    existing OUT_DIR is kept.
    """
    from medvlthinker.converters.sft_format import convert_to_sft, write_sft_dataset
    from medvlthinker.data import load_unified
    from medvlthinker.staging import check_writable

    check_writable(out_dir, overwrite)  # before any work

    ds = load_unified(source, split, subset=list(subset) or None, size=size, num_proc=num_proc)
    sft = convert_to_sft(ds, resize_pmc=resize_pmc, num_proc=num_proc)
    path = write_sft_dataset(sft, out_dir, overwrite=overwrite)
    n_images = sum(any(part["type"] == "image" for part in p[0]["content"]) for p in sft["prompt"])
    click.echo(f"wrote {len(sft)} SFT examples ({n_images} with images) to {path}")


if __name__ == "__main__":
    main()
