"""SFT training throughput (tokens/s) and MFU of one device.

CPU (the tiny model, a few steps):  python benchmarks/benchmark_sft.py
GPU (the 3B architecture, random weights, the paper's 1 example per device):
    python benchmarks/benchmark_sft.py --model configs/models/qwen2.5-vl-3b --random_weights --seq_len 4096
MFU uses the dense bf16 peak of the GPU (H100/H200 989 TFLOPS); on CPU pass --peak_tflops to get one.
"""

from __future__ import annotations

import json

import click

from medvlthinker import cli


@cli.command()
@click.option("--model", "model_dir", default=None,
              help="Model directory (default: the tiny random model on CPU, configs/models/qwen2.5-vl-3b on GPU).")
@click.option("--random_weights/--pretrained_weights", default=None,
              help="Build from config.json alone (default: on for the configs/models dirs).")
@click.option("--seq_len", type=int, default=None, help="Tokens per example (default 256 on CPU, 4096 on GPU).")
@click.option("--batch_size", type=int, default=1, show_default=True)
@click.option("--steps", type=int, default=None, help="Timed steps (default 3 on CPU, 10 on GPU).")
@click.option("--warmup", type=int, default=1, show_default=True)
@click.option("--gradient_checkpointing/--no_gradient_checkpointing", default=True, show_default=True)
@click.option("--peak_tflops", type=float, default=None, help="Device peak for MFU when it is not known.")
@click.option("--json_out", type=click.Path(dir_okay=False), default=None, help="Also write the figures here.")
def main(model_dir, random_weights, seq_len, batch_size, steps, warmup, gradient_checkpointing, peak_tflops,
         json_out):
    """Print tokens/s and MFU of full SFT training steps."""
    import torch

    from medvlthinker.train.sft_benchmark import benchmark_sft_step

    gpu = torch.cuda.is_available()
    if model_dir is None:
        if gpu:
            model_dir = "configs/models/qwen2.5-vl-3b"
        else:
            from medvlthinker.demo.tiny import tiny_model_path

            model_dir = str(tiny_model_path())
    if random_weights is None:
        random_weights = "configs/models" in str(model_dir)
    figures = benchmark_sft_step(
        model_dir,
        seq_len=seq_len or (4096 if gpu else 256),
        batch_size=batch_size,
        steps=steps or (10 if gpu else 3),
        warmup=warmup,
        random_weights=random_weights,
        gradient_checkpointing=gradient_checkpointing,
        peak=peak_tflops * 1e12 if peak_tflops else None,
    )
    text = json.dumps(figures, indent=2)
    click.echo(text)
    if json_out:
        with open(json_out, "w") as f:
            f.write(text + "\n")
    mfu = f"{100 * figures['mfu']:.1f}%" if figures["mfu"] is not None else "n/a (unknown device peak)"
    click.echo(f"{figures['tokens_per_s']:.0f} tokens/s, {figures['tflops_per_s']:.2f} TFLOP/s, MFU {mfu}")


if __name__ == "__main__":
    main()
