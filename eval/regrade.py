"""Regrade eval records with the published table's grader (mode "regrade"), optionally with the llava-med rule.

    python eval/regrade.py runs/3b            # writes eval_results.regrade.jsonl and accuracy.regrade.json
    python eval/regrade.py runs/3b --llava_med_rule
"""

from __future__ import annotations

import json

import click

from medvlthinker.inference.regrade import regrade


@click.command(context_settings={"show_default": True})
@click.argument("results", type=click.Path(exists=True))
@click.option("--output_dir", default=None, help="default: beside the input")
@click.option("--mode", type=click.Choice(["regrade", "strict"]), default="regrade")
@click.option("--llava_med_rule", is_flag=True, help="also accept the answer text as a substring of the prediction")
def main(results, output_dir, mode, llava_med_rule):
    table = regrade(results, output_dir, mode=mode, llava_med_rule=llava_med_rule)
    click.echo(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
