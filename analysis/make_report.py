"""One self-contained HTML report (table, figures, sample browser) plus the tables and figures it shows.

    python analysis/make_report.py --runs_root outputs/eval --eval_data UCSC-VLAA/MedVLThinker-Eval \\
        --compare base=Qwen2.5-VL-3B-Instruct --published_model Qwen2.5-VL-3B-Instruct --output_dir outputs/report

Writes OUTPUT_DIR/report.html, OUTPUT_DIR/tables/table.{md,tex,tsv,json} and OUTPUT_DIR/plots/*.{png,pdf}.
Runs are grouped by model as in make_tables.py (--run MODEL=DIR repeated per greedy repeat, or --runs_root
ROOT/MODEL/REPEAT/). --eval_data (any source load_unified reads) supplies the image thumbnails.
"""

from __future__ import annotations

import click

from medvlthinker.analysis import report
from medvlthinker.analysis.cli_options import (
    COMPARISON_OPTIONS,
    FIGURE_OPTIONS,
    RUN_OPTIONS,
    command,
    flag,
    report_settings,
    with_options,
)


@command()
@with_options(RUN_OPTIONS, FIGURE_OPTIONS, COMPARISON_OPTIONS)
@flag("output_dir", required=True, type=click.Path(file_okay=False), help="Where everything goes.")
@flag("seed", default=0, help="Seed of the bootstrap and of the sample choice.")
@flag("samples_per_benchmark", type=click.IntRange(min=0), default=8, help="Rows per benchmark and model in the sample browser.")
@flag("rl_log", type=click.Path(exists=True, dir_okay=False),
      help="verl's console log of an RL run: adds the mean-reward curve.")
@flag("reliance_run", multiple=True, metavar="MODEL=DIR",
      help="An eval run of MODEL with --image_mode (as_is, blank, shuffled, none; its args.json says which): adds "
           "the visual-reliance table (docs/experiments.md).")
@flag("title", default="MedVLThinker evaluation report", help="Report title.")
def main(**params):
    out = report.make_report(report_settings(params))
    click.echo(f"report: {out['report']}")
    click.echo(f"tables: {out['tables']['md']} (also .tex, .tsv, .json)")
    for name, paths in out["plots"].items():
        click.echo(f"plot {name}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
