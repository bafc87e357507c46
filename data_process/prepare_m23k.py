"""m23k-style text multiple-choice questions with reasoning -> the unified schema (text-only rows).

    python data_process/prepare_m23k.py --source UCSC-VLAA/MedVLThinker-m23k-tokenized --split train \
        --output data/local/m23k

--source is a Hub name or a local save_to_disk directory, .parquet, .jsonl or .csv file. The column mapping
(answer_idx -> answer_label, options as dict / JSON / list, ...) is in docs/data.md. Malformed rows are counted
and shown with examples, and skipped (--on_error skip) or fatal (--on_error fail).
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.prepare import ON_ERROR, prepare_m23k


@cli.command()
@click.option("--source", required=True, help="Hub name or local path of the m23k-style table.")
@click.option("--split", default="train", show_default=True, help="Split of a Hub data set or saved DatasetDict.")
@click.option("--output", required=True, help="Output: a save_to_disk directory, or a .parquet file.")
@click.option("--on_error", type=click.Choice(ON_ERROR), default="skip", show_default=True, help="What a malformed source row does.")
@click.option("--dataset_name", default=None, help="Override dataset_name [default: the source's column, else m23k].")
@click.option("--start_index", type=int, default=0, show_default=True, help="dataset_index of the first row when the source has none.")
@click.option("--require_reasoning/--no_require_reasoning", default=False, show_default=True, help="Treat a row without reasoning as malformed (SFT data needs it).")
@click.option("--limit", type=int, default=None, help="Only the first N rows.")
def main(source, split, output, on_error, dataset_name, start_index, require_reasoning, limit):
    _, report = prepare_m23k(
        source, output, split=split, on_error=on_error, dataset_name=dataset_name, start_index=start_index,
        require_reasoning=require_reasoning, limit=limit,
    )
    click.echo(report.summary())
    click.echo(f"saved {report.rows_written} rows to {output}")


if __name__ == "__main__":
    main()
