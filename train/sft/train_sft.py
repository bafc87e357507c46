"""Supervised fine-tuning from one YAML config (configs/sft/*.yaml), with key=value overrides.

Single process (CPU or one GPU):  python train/sft/train_sft.py configs/sft/tiny_cpu.yaml train_data=data/sft/tiny
FSDP on 8 GPUs:                   train/sft/sft.sh configs/sft/qwen2.5-vl-3b_sft_m23k.yaml

Before the model loads, the run checks the model path, the output directory and the data set (path, columns, rows,
and on the main process every image decoded), so a mistake fails in seconds naming the key, file or row.
"""

from __future__ import annotations

import click

from medvlthinker import cli


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--print-config", is_flag=True, help="Print the validated config and the trainer arguments, then exit.")
@click.option("--check", is_flag=True,
              help="Check the model path, output directory and data set (path, columns, rows), then exit.")
def main(config, overrides, print_config, check):
    """Train with CONFIG; OVERRIDES are key=value pairs (nested: trainer_args.key=value)."""
    import dataclasses

    import yaml

    from medvlthinker.train.sft import build_sft_config, load_config, preflight, run_sft

    cfg = load_config(config, overrides)
    if print_config:
        click.echo(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        args = build_sft_config(cfg)
        click.echo(f"gradient_accumulation_steps: {args.gradient_accumulation_steps}")
    if check:
        ds = preflight(cfg, check_images=False)
        click.echo(f"checked: {cfg.train_data} ({len(ds)} rows), {cfg.output_dir} writable")
    if print_config or check:
        return
    trainer = run_sft(cfg)
    if trainer.is_world_process_zero():
        click.echo(f"saved the model to {cfg.output_dir}")


if __name__ == "__main__":
    main()
