"""Merge the shard files of an eval output directory into eval_results.jsonl and accuracy.json.

    python eval/merge_results.py runs/3b [--expected_rows 8220]
"""

from __future__ import annotations

import json

import click

from medvlthinker import cli
from medvlthinker.inference.records import merge_results


@cli.command()
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--expected_rows", type=int, default=None, help="fail when fewer records are present")
def main(output_dir, expected_rows):
    click.echo(json.dumps(merge_results(output_dir, expected_rows=expected_rows), indent=2))


if __name__ == "__main__":
    main()
