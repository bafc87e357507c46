"""Peak memory of a whole run against the number of rows: N, 4N and 16N rows of one large image each.

Every measurement is a fresh process running ``eval/run_offline_inference.py``'s ``run`` (validation pass,
engine start, generation, merge) on the first R rows of one synthetic data set; it reports its peak resident set
size (``ru_maxrss``) and the peak of its anonymous part (heap and tensors, sampled; it leaves out pages of the
memory-mapped data set, which the kernel may drop). The sizes alternate order over ``--repeats`` repetitions and
the medians are printed. With the window bounding the requests in flight, 16N rows must stay within 15% of N.

    python benchmarks/benchmark_memory.py                                   # vLLM CPU build, N=8, window 4
    python benchmarks/benchmark_memory.py --rows 64 --window 32 --image_size 1000
    python benchmarks/benchmark_memory.py --window 100000                   # no bound: every row in flight at once
    python benchmarks/benchmark_memory.py --backend hf --rows 4 --window 2 --max_pixels 200704   # quick, on CPU
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from medvlthinker import cli

from medvlthinker.images import MAX_PIXELS

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

MARK = "PEAK_MEMORY "


def _child(data: str, rows: int, backend: str, window: int, model: str, out: str, max_model_len: int,
           max_pixels: int) -> None:
    from medvlthinker.inference.runner import RunConfig, run
    from medvlthinker.inference.workloads import PeakRss

    config = RunConfig(model=model, backend=backend, dataset_name=data, dataset_size=rows, output_dir=out,
                       max_tokens=2, window=window, progress=False, max_model_len=max_model_len,
                       limit_mm_per_prompt=1, batch_size=window, max_pixels=max_pixels)
    with PeakRss() as peak:
        run(config)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(MARK + json.dumps({"rows": rows, "maxrss": maxrss, "peak_anon": peak.peak_anon}), flush=True)


@cli.command(context_settings={"show_default": True})
@click.option("--rows", "base_rows", type=int, default=8, help="N: the runs have N, 4N and 16N rows")
@click.option("--window", type=int, default=4, help="requests in flight (the runner's --window)")
@click.option("--image_size", type=int, default=1000, help="square image side of every row")
@click.option("--backend", type=click.Choice(["vllm", "hf"]), default="vllm")
@click.option("--repeats", type=int, default=3)
@click.option("--model", default=None, help="default: the tiny test model")
@click.option("--max_model_len", type=int, default=2048)
@click.option("--max_pixels", type=int, default=MAX_PIXELS,
              help="the runner's --max_pixels (a lower value resizes the images down: cheaper on CPU)")
@click.option("--child_rows", type=int, default=None, hidden=True)
@click.option("--child_data", default=None, hidden=True)
@click.option("--child_out", default=None, hidden=True)
def main(base_rows, window, image_size, backend, repeats, model, max_model_len, max_pixels, child_rows, child_data,
         child_out):
    if model is None:
        from medvlthinker.tiny import tiny_model_path

        model = str(tiny_model_path())
    if child_rows is not None:
        _child(child_data, child_rows, backend, window, model, child_out, max_model_len, max_pixels)
        return
    from medvlthinker import synthetic
    from medvlthinker.inference.workloads import median_of

    sizes = [base_rows, 4 * base_rows, 16 * base_rows]
    peaks: dict[int, list[dict]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = synthetic.make_image_rows(n=sizes[-1], seed=0, image_size=(image_size, image_size))
        synthetic.to_dataset(rows).save_to_disk(str(tmp / "data"))
        del rows
        for rep in range(repeats):
            for size in sizes if rep % 2 == 0 else list(reversed(sizes)):
                out = tmp / f"out-{rep}-{size}"
                cmd = [sys.executable, __file__, "--child_rows", str(size), "--child_data", str(tmp / "data"),
                       "--child_out", str(out), "--backend", backend, "--window", str(window), "--model", model,
                       "--max_model_len", str(max_model_len), "--max_pixels", str(max_pixels)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
                if proc.returncode != 0 or not lines:
                    raise click.ClickException(f"the {size}-row run failed:\n{proc.stderr[-3000:]}")
                result = json.loads(lines[-1][len(MARK):])
                peaks[size].append(result)
                click.echo(f"repetition {rep}, {size} rows: peak RSS {result['maxrss'] / 2**30:.3f} GiB, "
                           f"peak anonymous {result['peak_anon'] / 2**30:.3f} GiB")
    click.echo(f"{backend}, window {window}, one {image_size}x{image_size} image per row (max_pixels {max_pixels}), "
               f"max_tokens 2; medians "
               f"over {repeats} repetitions:")
    base = {key: median_of([r[key] for r in peaks[sizes[0]]]) for key in ("maxrss", "peak_anon")}
    for size in sizes:
        rss = median_of([r["maxrss"] for r in peaks[size]])
        anon = median_of([r["peak_anon"] for r in peaks[size]])
        click.echo(f"{size:>6} rows: peak RSS {rss / 2**30:.3f} GiB ({rss / base['maxrss']:.3f} x N), "
                   f"peak anonymous {anon / 2**30:.3f} GiB ({anon / base['peak_anon']:.3f} x N)")


if __name__ == "__main__":
    main()
