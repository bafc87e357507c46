"""Attach pass_count from a pass-rate run, keep [below, above], order the rows (docs/protocol.md section 6).

    python data_process/order_easy_to_hard.py \
        --dataset_name UCSC-VLAA/MedVLThinker-m23k-tokenized --split train \
        --results_jsonl_path outputs/pass_rate/Qwen2.5-VL-3B-Instruct/m23k/eval_results.jsonl \
        --save_to_disk_path data/local/m23k-easy_to_hard

Prints and saves (next to the output, in ``<output>_curation/``) the pass-count distribution as a table and a bar
plot, and how many rows each filter removed. An empty or duplicated records file, records of another data set, a
duplicate dataset_index or a band that keeps no row (or fewer than --min_rows) stop the run naming the file or
row; the previous output at --save_to_disk_path is only replaced by a complete, validated set.
"""

from __future__ import annotations

from pathlib import Path

import click

from medvlthinker import cli
from medvlthinker.curate import curation, curation_report
from medvlthinker.inference.settings import CURATION


@cli.command()
@click.option("--dataset_name", required=True, help="Training set: Hub name, save_to_disk directory or .parquet file.")
@click.option("--split", default="train", show_default=True, help="Split, for Hub data sets.")
@click.option(
    "--results_jsonl_path",
    required=True,
    help="eval_results.jsonl of the pass-rate run (eval/run_offline_inference.py --preset pass_rate), or its output "
         "directory.",
)
@click.option("--remove_pass_count_below", type=int, default=CURATION.remove_pass_count_below, show_default=True,
              help="Drop rows with pass_count below this (the default is the paper's; -1 = no result).")
@click.option("--remove_pass_count_above", type=int, default=CURATION.remove_pass_count_above, show_default=True,
              help="Drop rows with pass_count above this (the default is the paper's).")
@click.option("--order_type", type=click.Choice(curation.ORDERS), default=CURATION.order, show_default=True,
              help="Row order of the output.")
@click.option("--seed", type=int, default=CURATION.seed, show_default=True,
              help="Seed of the shuffle before the stable sort (the default is the paper's).")
@click.option("--num_rollouts", type=click.IntRange(min=0), default=CURATION.rollouts, show_default=True,
              help="Rollouts per record expected in the results (0: do not check).")
@click.option("--min_rows", type=int, default=1, show_default=True,
              help="Stop, writing nothing, if the band keeps fewer rows (e.g. the RL batch size, which verl needs "
                   "at least once).")
@click.option("--save_to_disk_path", required=True, help="Output: a save_to_disk directory, or a .parquet file.")
@click.option("--report_dir", default=None, help="Where the distribution table, plots and report go [default: <output>_curation].")
@click.option("--plot_format", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True)
def main(dataset_name, split, results_jsonl_path, remove_pass_count_below, remove_pass_count_above, order_type, seed,
         num_rollouts, min_rows, save_to_disk_path, report_dir, plot_format):
    ds = curation.load_dataset_any(dataset_name, split)
    click.echo(f"loaded {dataset_name}: {len(ds)} rows")
    counts = curation.load_pass_counts(results_jsonl_path, expected_rollouts=num_rollouts or None)
    click.echo(f"loaded pass counts of {len(counts)} questions from {results_jsonl_path}")
    curated, report = curation.curate(
        ds,
        counts,
        remove_pass_count_below=remove_pass_count_below,
        remove_pass_count_above=remove_pass_count_above,
        order=order_type,
        seed=seed,
        max_count=num_rollouts or CURATION.rollouts,
    )
    curation.save_curated(curated, save_to_disk_path, report, min_rows=min_rows)
    out = Path(save_to_disk_path)
    report_dir = Path(report_dir) if report_dir else out.with_name(out.name.removesuffix(".parquet") + "_curation")
    paths = curation_report.write_curation_outputs(report, report_dir, plot_format=plot_format)
    click.echo(paths["table"].read_text(encoding="utf-8"), nl=False)
    click.echo(f"saved {report.rows_out} rows to {save_to_disk_path}; report, table and plots in {report_dir}")


if __name__ == "__main__":
    main()
