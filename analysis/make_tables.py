"""The paper table (PMC, MMMU, MedX-M, PathVQA, SLAKE, VQA-Rad, Avg.) from eval output directories.

Greedy repeats of one model are grouped by name: give ``--run MODEL=DIR`` once per repeat, or ``--runs_root ROOT``
with the layout ``ROOT/MODEL/REPEAT/eval_results.jsonl``. Writes table.md, table.tex, table.tsv and table.json
into --output_dir and prints the Markdown.

    python analysis/make_tables.py --runs_root outputs/eval --compare base=Qwen2.5-VL-3B-Instruct \\
        --paired rl_m23k base --output_dir outputs/tables
"""

from __future__ import annotations

import click

from medvlthinker.analysis import AnalysisError, tables
from medvlthinker.analysis.cli_options import (
    COMPARISON_OPTIONS,
    RUN_OPTIONS,
    command,
    flag,
    table_settings,
    with_options,
)
from medvlthinker.analysis.render import to_markdown, write_tables


@command()
@with_options(RUN_OPTIONS, COMPARISON_OPTIONS)
@flag("output_dir", required=True, type=click.Path(file_okay=False), help="Where the tables go.")
@flag("alpha", default=0.05, help="1 - confidence level of the intervals.")
@flag("seed", default=0, help="Bootstrap seed.")
@flag("no_cluster", is_flag=True, help="Resample rows, not images (default: cluster by misc.image_id).")
@flag("published", type=click.Path(dir_okay=False), default=None,
      help="Published results CSV (default: the paper's, shipped with the package).")
@flag("cost", is_flag=True, help="Add the cost column: device-hours per row from the runs' cost.json and --rl_log "
                                 "(cost.md, cost.json; docs/experiments.md).")
@flag("rl_log", multiple=True, metavar="MODEL=LOG",
      help="verl's console log of MODEL's RL run, for --cost (seconds per step, tokens/s per device).")
def main(output_dir, cost, rl_log, **params):
    try:
        result = tables.make_tables(table_settings(params))
    except AnalysisError as exc:
        raise click.ClickException(str(exc)) from None
    paths = write_tables(result.table, output_dir, result.comparison, result.paired)
    click.echo(to_markdown(result.table, result.comparison, result.paired))
    if cost or rl_log:
        from medvlthinker.analysis import cost as cost_module
        from medvlthinker.staging import write_json, write_text

        logs = dict(spec.split("=", 1) for spec in rl_log if "=" in spec)
        if len(logs) != len(rl_log):
            raise click.UsageError("--rl_log: expected MODEL=LOG")
        unknown = sorted(set(logs) - {m.name for m in result.models})
        if unknown:
            raise click.UsageError(f"--rl_log {unknown[0]}=...: no run named {unknown[0]!r}")
        rows = cost_module.cost_rows(result.models, logs)
        text = cost_module.cost_markdown(rows)
        paths["cost_md"] = str(write_text(f"{output_dir}/cost.md", text + "\n"))
        paths["cost_json"] = str(write_json(f"{output_dir}/cost.json", rows))
        click.echo(text)
    click.echo("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
