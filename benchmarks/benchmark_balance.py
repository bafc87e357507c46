"""Data-parallel balance: the slowest rank's share of the work under each assignment of rows to ranks.

Work per row is its generated tokens (all rollouts), from a recorded run (any output directory of
eval/run_offline_inference.py, or eval_results.jsonl), or with ``--eval_set_means`` the 8,220 rows of the eval set
at their benchmark's mean answer length. A share of 1.52 means the run takes 1.52x as long as a perfectly
balanced one: every other rank waits for the slowest. Columns: contiguous shards (the original), interleaved
ranks (the spawn path), and a shared queue (the Ray pool; simulated: each row goes to the rank with the least
work so far).

    python benchmarks/benchmark_balance.py runs/M --dp_size 4,8,16,32
    python benchmarks/benchmark_balance.py --eval_set_means

For a Ray run the shard files are the workers' (rows taken dynamically from one queue): their measured shares are
printed too.
"""

from __future__ import annotations

import click

from medvlthinker import cli


@cli.command(context_settings={"show_default": True})
@click.argument("run_dir", required=False, type=click.Path(exists=True))
@click.option("--dp_size", default="2,4,8,16,32", help="comma-separated rank counts")
@click.option("--eval_set_means", is_flag=True, help="the eval set's row order at the benchmark mean lengths")
def main(run_dir, dp_size, eval_set_means):
    from pathlib import Path

    from medvlthinker.inference.assign import recorded_work, slowest_share
    from medvlthinker.inference.records import SHARD_RE, read_records, read_run, shard_files
    from medvlthinker.inference.workloads import eval_set_lengths

    if eval_set_means == bool(run_dir):
        raise click.UsageError("pass a recorded run directory or --eval_set_means (one of the two)")
    work = eval_set_lengths() if eval_set_means else recorded_work(read_run(run_dir))
    source = "eval set at the benchmark means" if eval_set_means else run_dir
    click.echo(f"{source}: {len(work)} rows, {sum(work)} generated tokens")
    click.echo(f"{'dp_size':>8} {'contiguous':>11} {'interleaved':>12} {'shared queue':>13}   "
               f"(slowest rank's work / mean rank's work)")
    for world in (int(x) for x in dp_size.split(",") if x):
        shares = [slowest_share(work, world, how) for how in ("contiguous", "interleaved", "queue")]
        click.echo(f"{world:>8} {shares[0]:>11.3f} {shares[1]:>12.3f} {shares[2]:>13.3f}")
    if run_dir and Path(run_dir).is_dir():
        shards = [p for p in shard_files(run_dir) if SHARD_RE.search(p.name)]
        worlds = {SHARD_RE.search(p.name).group(2) for p in shards}
        if len(shards) > 1 and len(worlds) == 1:
            per_shard = [sum(recorded_work(read_records(p))) for p in shards]
            mean = sum(per_shard) / len(per_shard)
            click.echo(f"recorded shards ({len(shards)}): slowest share {max(per_shard) / mean:.3f}")


if __name__ == "__main__":
    main()
