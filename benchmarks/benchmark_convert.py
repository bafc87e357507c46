"""Throughput of the verl RL converter on synthetic image rows: rows/s for num_proc 1 and 2, and whether the cost
grows linearly with the number of rows (time per row at N/4 rows vs N rows).

    python benchmarks/benchmark_convert.py --rows 10000
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from medvlthinker import cli


def _time_convert(ds, num_proc: int, out: Path) -> float:
    from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet

    start = time.perf_counter()
    write_verl_parquet(convert_to_verl(ds, num_proc=num_proc if num_proc > 1 else None), out, overwrite=True)
    return time.perf_counter() - start


@cli.command()
@click.option("--rows", type=int, default=10_000, show_default=True, help="Synthetic image rows to convert.")
@click.option("--num_proc", "num_procs", type=int, multiple=True, default=(1, 2), show_default=True)
@click.option("--image_size", type=int, default=64, show_default=True, help="Side of the synthetic PNGs.")
def main(rows, num_procs, image_size):
    """Print rows/s of unified -> verl parquet conversion (images kept as stored bytes)."""
    import datasets

    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic

    datasets.disable_caching()
    # Build a small pool of distinct rows and tile it: generating 10k PNGs would dominate the run.
    pool = synthetic.make_image_rows(n=min(rows, 500), seed=0, image_size=(image_size, image_size))
    tiled = [dict(pool[i % len(pool)], dataset_index=i) for i in range(rows)]
    full = to_dataset(tiled)
    quarter = full.select(range(rows // 4))
    with tempfile.TemporaryDirectory() as tmp:
        for num_proc in num_procs:
            t_quarter = _time_convert(quarter, num_proc, Path(tmp) / "q.parquet")
            t_full = _time_convert(full, num_proc, Path(tmp) / "f.parquet")
            ratio = (t_full / rows) / (t_quarter / (rows // 4))
            click.echo(
                f"num_proc={num_proc}: {rows} rows in {t_full:.1f} s = {rows / t_full:,.0f} rows/s; "
                f"{rows // 4} rows in {t_quarter:.1f} s; time per row at {rows} vs {rows // 4} rows: {ratio:.2f}x "
                f"({'linear' if ratio < 1.3 else 'SUPERLINEAR'})"
            )


if __name__ == "__main__":
    main()
