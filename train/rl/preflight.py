"""Check an RL config on a CPU before it takes a GPU cluster: compose + verl validation, reward keys and scores,
the fixes of verl (3-D position ids, text-only batches), data files, prompt lengths (image tokens included) through verl's RLHFDataset.

    python train/rl/preflight.py configs/rl/qwen2.5-vl-3b_rl_m23k.yaml
    python train/rl/preflight.py configs/rl/qwen2.5-vl-3b_rl_m23k.yaml \
        actor_rollout_ref.model.path=/models/Qwen2.5-VL-3B-Instruct data.train_files=[data/verl/smoke.parquet]
    python train/rl/preflight.py configs/rl/qwen2.5-vl-3b_rl_pmc.yaml configs/rl/overlays/cpu.yaml [overrides...]

Exit status 0 when every check passes, 1 with the first problem (what, where, the fix) otherwise.
"""

from __future__ import annotations

import click

from medvlthinker import cli


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--sample_rows", type=click.IntRange(min=1), default=64, show_default=True,
              help="Rows per data file loaded through RLHFDataset and measured.")
@click.option("--sample-rows", "sample_rows_dashed", type=click.IntRange(min=1), hidden=True)  # the former spelling
def main(config, overrides, sample_rows, sample_rows_dashed):
    """Preflight CONFIG with overlay files and Hydra OVERRIDES (key=value), as for train/rl/train.sh."""
    if sample_rows_dashed is not None:
        click.echo("warning: --sample-rows is deprecated and will be removed; spell it --sample_rows", err=True)
        sample_rows = sample_rows_dashed
    from medvlthinker.train.preflight import run_preflight
    from medvlthinker.train.preflight_config import PreflightError
    from medvlthinker.train.rl import LaunchError, split_arguments

    try:
        report = run_preflight(config, split_arguments(config, list(overrides)), sample_rows=sample_rows)
    except (PreflightError, LaunchError) as exc:
        raise cli.UserError(config, f"preflight FAILED: {exc}") from exc
    click.echo(report.text())
    click.echo("preflight passed")


if __name__ == "__main__":
    main()
