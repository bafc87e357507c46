"""Raw PMC-VQA (train CSV + figure folder) -> the unified schema, images resized by the PMC-VQA rule.

    python data_process/prepare_pmc_vqa.py --csv_path PMC-VQA/train.csv --image_dir PMC-VQA/figures \
        --output data/local/pmc_vqa_train --num_proc 8

By default (--compat original) the rows and dataset_index values are those of the original recipe's script, so the
output joins with the released UCSC-VLAA/MedVLThinker-pmc_vqa (and its pass-rate and reasoning files) on
dataset_index; --compat lenient keeps more rows and indexes by CSV position (medvlthinker.prepare.pmc_vqa.COMPAT).
Malformed rows (bad Answer_label, a choice without its prefix, missing or undecodable image) are counted and shown
with examples, and skipped (--on_error skip, the default) or fatal (--on_error fail). Finished chunks are kept in
<output>.chunks/, so an interrupted run resumes; a chunk is rebuilt when a figure it read was added, fixed or
replaced since. The report goes to <output>.report.json. A run that keeps no row (a wrong --image_dir, an empty CSV)
stops with the report and writes nothing; the output is replaced only once the new one is complete.
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.prepare import COMPAT, ON_ERROR, prepare_pmc_vqa


@cli.command()
@click.option("--csv_path", required=True, type=click.Path(exists=True, dir_okay=False), help="PMC-VQA train CSV.")
@click.option("--image_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder the CSV's Figure_path entries are relative to.")
@click.option("--output", required=True, help="Output: a save_to_disk directory, or a .parquet file.")
@click.option("--on_error", type=click.Choice(ON_ERROR), default="skip", show_default=True, help="What a malformed source row does.")
@click.option("--dataset_name", default="pmc_vqa", show_default=True, help="dataset_name of every row.")
@click.option("--start_index", type=int, default=0, show_default=True, help="dataset_index of the CSV's first data row.")
@click.option("--limit", type=int, default=None, help="Only the first N CSV rows (a quick look).")
@click.option("--num_proc", type=int, default=1, show_default=True, help="Worker processes decoding and resizing images.")
@click.option("--chunk_size", type=int, default=5000, show_default=True, help="Rows per resumable chunk.")
@click.option("--compat", type=click.Choice(COMPAT), default="original", show_default=True,
              help="original: the original's rows and dataset_index (joins with the released set); lenient: keep "
                   "more rows, index by CSV position.")
def main(csv_path, image_dir, output, on_error, dataset_name, start_index, limit, num_proc, chunk_size, compat):
    report = prepare_pmc_vqa(
        csv_path, image_dir, output, on_error=on_error, dataset_name=dataset_name, start_index=start_index,
        limit=limit, num_proc=num_proc, chunk_size=chunk_size, compat=compat,
    )
    click.echo(report.summary())
    click.echo(f"saved {report.rows_written} rows to {output}")


if __name__ == "__main__":
    main()
