"""Supervised fine-tuning from one YAML config (configs/sft/*.yaml), with key=value overrides.

Single process (CPU or one GPU):  python train/sft/train_sft.py configs/sft/tiny_cpu.yaml train_data=data/sft/tiny
FSDP on 8 GPUs:                   train/sft/sft.sh configs/sft/qwen2.5-vl-3b_sft_m23k.yaml

The config is a ``trl.SFTConfig`` with the paper's defaults (medvlthinker/train/sft_config.py): every key, with its
help, is listed by --help. Before the model loads, the run checks the model path, the output directory and the data
set (path, columns, rows, and on the main process every image decoded), so a mistake fails in seconds naming the
key, file or row. A run resumes from the newest complete checkpoint in output_dir when that folder was written by
the same model, data and trainer arguments; otherwise it stops, and --overwrite starts afresh there.
"""

from __future__ import annotations

import click

from medvlthinker import cli


class _WithConfigKeys(cli.Command):
    """--help lists the config's keys with their help, from TRL's parser over the config dataclass."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from medvlthinker.train.sft_config import parser

        text = parser().format_help()
        keys = text[text.index("options:") + len("options:"):] if "options:" in text else text
        keys = "\n".join(line for line in keys.splitlines() if not line.lstrip().startswith("-h, --help"))
        with formatter.section("Config keys (in CONFIG, or as key=value; flags of TRL's parser, without the --)"):
            formatter.write(keys.strip("\n") + "\n")


@cli.command(cls=_WithConfigKeys, context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--print_config", is_flag=True, help="Print the validated config and the trainer arguments, then exit.")
@click.option("--print-config", "print_config_dashed", is_flag=True, hidden=True)  # deprecated spelling
@click.option("--check", is_flag=True,
              help="Check the model path, output directory and data set (path, columns, rows), then exit.")
@click.option("--overwrite", is_flag=True,
              help="Start afresh in output_dir: remove the checkpoints of an earlier run there instead of resuming.")
def main(config, overrides, print_config, print_config_dashed, check, overwrite):
    """Train with CONFIG; OVERRIDES are key=value pairs of the config's keys."""
    import yaml

    from medvlthinker.train.sft import preflight, run_sft
    from medvlthinker.train.sft_config import load_config, project_values

    cfg = load_config(config, overrides)
    if print_config_dashed:
        click.echo("warning: --print-config is deprecated; use --print_config", err=True)
        print_config = True
    if print_config:
        click.echo(yaml.safe_dump(project_values(cfg), sort_keys=False))
        click.echo(f"gradient_accumulation_steps: {cfg.gradient_accumulation_steps}")
    if check:
        ds = preflight(cfg, check_images=False)
        click.echo(f"checked: {cfg.train_data} ({len(ds)} rows), {cfg.output_dir} writable")
    if print_config or check:
        return
    trainer = run_sft(cfg, overwrite=overwrite)
    if trainer.is_world_process_zero():
        click.echo(f"saved the model to {cfg.output_dir}")


if __name__ == "__main__":
    main()
