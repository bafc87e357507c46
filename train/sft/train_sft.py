"""Supervised fine-tuning from one YAML config (configs/sft/*.yaml), with key=value overrides.

Single process (CPU or one GPU):  python train/sft/train_sft.py configs/sft/tiny_cpu.yaml train_data=data/sft/tiny
FSDP on 8 GPUs:                   train/sft/sft.sh configs/sft/qwen2.5-vl-3b_sft_m23k.yaml
"""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--print-config", is_flag=True, help="Print the validated config and the trainer arguments, then exit.")
def main(config, overrides, print_config):
    """Train with CONFIG; OVERRIDES are key=value pairs (nested: trainer_args.key=value)."""
    import dataclasses

    import yaml

    from medvlthinker.train.sft import build_sft_config, load_config, run_sft

    try:
        cfg = load_config(config, overrides)
        if print_config:
            click.echo(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            args = build_sft_config(cfg)
            click.echo(f"gradient_accumulation_steps: {args.gradient_accumulation_steps}")
            return
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    trainer = run_sft(cfg)
    if trainer.is_world_process_zero():
        click.echo(f"saved the model to {cfg.output_dir}")


if __name__ == "__main__":
    main()
