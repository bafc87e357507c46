"""Regrade eval records with the published table's grader (mode "regrade"), optionally with the llava-med rule.

    python eval/regrade.py runs/3b            # writes eval_results.regrade.jsonl and accuracy.regrade.json
    python eval/regrade.py runs/3b --llava_med_rule
    python eval/regrade.py released/eval_results.jsonl --eval_data UCSC-VLAA/MedVLThinker-Eval  # original layout
"""

from __future__ import annotations

import json

import click

from medvlthinker import cli
from medvlthinker.inference.regrade import regrade


@cli.command(context_settings={"show_default": True})
@click.argument("results", type=click.Path(exists=True))
@click.option("--output_dir", default=None, help="default: beside the input")
@click.option("--mode", type=click.Choice(["regrade", "strict"]), default="regrade")
@click.option("--llava_med_rule", is_flag=True, help="also accept the answer text as a substring of the prediction")
@click.option("--eval_data", default=None,
              help="eval set whose options fill in records without them (the original recipe's result files), "
                   "e.g. UCSC-VLAA/MedVLThinker-Eval")
@click.option("--eval_split", default=None, help="split of --eval_data")
@click.option("--allow_partial", is_flag=True,
              help="regrade an unfinished run's shards although rows are missing (a warning names them)")
def main(results, output_dir, mode, llava_med_rule, eval_data, eval_split, allow_partial):
    table = regrade(results, output_dir, mode=mode, llava_med_rule=llava_med_rule, eval_data=eval_data,
                    eval_split=eval_split, allow_partial=allow_partial)
    click.echo(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
