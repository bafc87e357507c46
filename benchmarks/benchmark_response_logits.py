"""verl's log-probability heads against the project's response-only one, on one packed micro-batch of a model
(medvlthinker.train.rl_benchmark; the opt-in overlay configs/rl/overlays/response_logits.yaml), interleaved.

    python benchmarks/benchmark_response_logits.py                   # the tiny model, 8 x (86 + 24) tokens, the demo's
    python benchmarks/benchmark_response_logits.py --repeats 9 --response_len 200

Prints the median seconds per micro-batch of each head, for a no-grad log-prob + entropy pass (the actor's
compute_log_prob) and a forward + backward without the entropy (an update_actor micro-batch), and the speed-up of
the response-only head over verl's default.
"""

from __future__ import annotations

import click

from medvlthinker import cli


@cli.command(context_settings={"show_default": True})
@click.option("--model", "model_dir", default=None, help="model directory (default: the tiny random model)")
@click.option("--sequences", type=int, default=8, help="sequences in the micro-batch (the demo's micro-batch)")
@click.option("--prompt_len", type=int, default=86, help="prompt tokens per sequence (the demo's prompts)")
@click.option("--response_len", type=int, default=24, help="response tokens per sequence (the demo's answers)")
@click.option("--repeats", type=int, default=5, help="repetitions of every head, interleaved")
def main(model_dir, sequences, prompt_len, response_len, repeats):
    from medvlthinker.train.rl_benchmark import HEADS, medians, time_heads

    if model_dir is None:
        from medvlthinker.demo.tiny import tiny_model_path

        model_dir = str(tiny_model_path())
    figures = medians(time_heads(model_dir, sequences=sequences, prompt_len=prompt_len, response_len=response_len,
                                 repeats=repeats))
    click.echo(f"{model_dir}: {sequences} x ({prompt_len} + {response_len}) tokens, median of {repeats} interleaved "
               f"repetitions, seconds per micro-batch")
    click.echo(f"{'head':<20} {'log_prob':>9} {'update':>9}")
    for name in HEADS:
        click.echo(f"{name:<20} {figures[name]['log_prob']:>9.3f} {figures[name]['update']:>9.3f}")
    base, ours = figures[HEADS[0]], figures[HEADS[-1]]
    click.echo(f"speed-up of '{HEADS[-1]}' over '{HEADS[0]}': log_prob {base['log_prob'] / ours['log_prob']:.2f}x, "
               f"update {base['update'] / ours['update']:.2f}x")


if __name__ == "__main__":
    main()
