"""``python -m medvlthinker.compat [--json | --markdown]``: the installed stack against pyproject.toml's pins, then
every patch of the package with its verdict in this process (:mod:`medvlthinker.compat.inventory`)."""

from __future__ import annotations

import json

import click

from medvlthinker.cli import command


@command(help=__doc__)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: python, stack, environment, patches.")
@click.option("--markdown", is_flag=True, help="Only the patch table of docs/known-issues.md (no verdicts).")
def main(as_json: bool, markdown: bool) -> None:
    from medvlthinker.compat import inventory

    if markdown:
        click.echo(inventory.markdown_table())
        return
    data = inventory.report()
    click.echo(json.dumps(data, indent=1) if as_json else inventory.text(data))


if __name__ == "__main__":
    main()
