"""SFT steps on a CPU with glibc's default allocator settings (the raw libraries) and with the project's
(medvlthinker.compat.cpu_allocator: freed blocks stay in the heap), in fresh processes, interleaved.

    python benchmarks/benchmark_cpu_allocator.py                      # the tiny model, 8 x 112 tokens, the demo's shape
    python benchmarks/benchmark_cpu_allocator.py --repeats 5 --steps 10

Prints the median of the repetitions per setting: seconds per step, system seconds and minor page faults per step,
the process's peak resident memory; and the speed-up of the medians.
"""

from __future__ import annotations

import statistics

import click

from medvlthinker import cli


@cli.command(context_settings={"show_default": True})
@click.option("--model", "model_dir", default=None, help="model directory (default: the tiny random model)")
@click.option("--seq_len", type=int, default=112, help="tokens per example (the demo's RL prompt + answer)")
@click.option("--batch_size", type=int, default=8, help="examples per step (the demo's SFT batch)")
@click.option("--steps", type=int, default=8, help="timed steps per process")
@click.option("--warmup", type=int, default=1)
@click.option("--repeats", type=int, default=3, help="processes per setting, in alternating order")
def main(model_dir, seq_len, batch_size, steps, warmup, repeats):
    from medvlthinker.train.sft_benchmark import compare_cpu_allocators

    if model_dir is None:
        from medvlthinker.demo.tiny import tiny_model_path

        model_dir = str(tiny_model_path())
    runs = compare_cpu_allocators(model_dir, repeats=repeats, seq_len=seq_len, batch_size=batch_size, steps=steps,
                                  warmup=warmup, gradient_checkpointing=False)
    click.echo(f"{model_dir}: {batch_size} x {seq_len} tokens, {steps} steps a process, {repeats} processes a setting")
    click.echo(f"{'allocator':<22} {'s/step':>8} {'sys s/step':>11} {'faults/step':>12} {'peak RSS GiB':>13}")
    medians = {}
    for keep, name in ((False, "glibc default"), (True, "keep freed memory")):
        mine = [r for r in runs if r["keep_freed_memory"] is keep]
        row = {key: statistics.median(r[key] for r in mine)
               for key in ("seconds_per_step", "sys_s_per_step", "minor_faults_per_step", "peak_rss_gib")}
        medians[keep] = row
        click.echo(f"{name:<22} {row['seconds_per_step']:>8.3f} {row['sys_s_per_step']:>11.3f} "
                   f"{row['minor_faults_per_step']:>12.0f} {row['peak_rss_gib']:>13.2f}")
    click.echo(f"speed-up (median s/step): {medians[False]['seconds_per_step'] / medians[True]['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
