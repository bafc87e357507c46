"""Resident memory of one long inference run, sampled over its rows: the peak, and the growth in MB a row.

Each arm is a fresh process over the same synthetic data set (one ``--image_size`` square image a row, stored as
JPEG of random pixels: no two alike, little to compress), sampled every half second
(:mod:`medvlthinker.inference.memory_trace`): the largest process's resident set (``VmRSS``, and its anonymous and
file-backed parts) against the rows written so far. Per arm it prints the peak, the peak up to a quarter of the
rows (the issue of a run that grows: peak at N rows against N/4), and the least-squares slope over the last half.

- ``runner``: ``eval/run_offline_inference.py`` as a user runs it (validation, engine, streaming window, records).
- ``raw`` (vLLM only): the library as the original recipe drives it: ``datasets.load_from_disk`` rows (images
  decoded by ``datasets``), the same prompts and pixels (the runner's request builder), ``LLM.generate`` on
  blocking chunks of ``--window`` rows, vLLM's default engine settings but the same context length.

Arms alternate order over ``--repeats``; medians are printed.

    python benchmarks/benchmark_memory.py                                   # vLLM, 640 rows, 1000x1000, window 8
    python benchmarks/benchmark_memory.py --window 0                        # the runner's default window
    python benchmarks/benchmark_memory.py --n 16                            # pass-rate mode (n=16, temperature 1)
    python benchmarks/benchmark_memory.py --backend hf --arms runner
    python benchmarks/benchmark_memory.py --arms runner --ray               # the engine in a Ray pool's actor
    python benchmarks/benchmark_memory.py --rows 1200 --image_size 224      # more rows, smaller images
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from medvlthinker import cli

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "eval" / "run_offline_inference.py"


def _make_data(path: Path, rows: int, size: int) -> None:
    import io

    import numpy as np
    from PIL import Image

    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic

    data = synthetic.make_image_rows(n=rows, seed=0, image_size=(8, 8))
    rng = np.random.default_rng(0)
    for row in data:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        row["images"] = [{"bytes": buf.getvalue(), "path": None}]
    to_dataset(data).save_to_disk(str(path))


def _raw_child(data: str, out: str, model: str, window: int, n: int, max_model_len: int) -> None:
    """The raw arm: rows from datasets, LLM.generate per chunk of ``window`` rows, one progress line a row."""
    import datasets
    import torch
    from transformers import AutoProcessor
    from vllm import LLM

    from medvlthinker.inference.backends import cpu_engine_defaults
    from medvlthinker.inference.requests import RequestBuilder
    from medvlthinker.inference.settings import SamplingSettings

    llm = LLM(model=model, max_model_len=max_model_len, limit_mm_per_prompt={"image": 1, "video": 0},
              **({} if torch.cuda.is_available() else cpu_engine_defaults()))
    builder = RequestBuilder(AutoProcessor.from_pretrained(model))
    params = SamplingSettings(max_tokens=2, n=n, temperature=1.0 if n > 1 else 0.0).to_vllm()
    rows = datasets.load_from_disk(data)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "progress.jsonl", "w") as progress:
        for start in range(0, len(rows), window):
            chunk = [builder.build(rows[i]).vllm_input() for i in range(start, min(start + window, len(rows)))]
            for _ in llm.generate(chunk, params, use_tqdm=False):
                progress.write("{}\n")
            progress.flush()


@cli.command(context_settings={"show_default": True})
@click.option("--rows", type=int, default=640, help="rows of the run")
@click.option("--image_size", type=int, default=1000, help="square image side of every row")
@click.option("--window", type=int, default=8, help="requests in flight (the runner's --window); 0: its default")
@click.option("--n", type=int, default=1, help="samples per row (16: pass-rate mode, temperature 1)")
@click.option("--backend", type=click.Choice(["vllm", "hf"]), default="vllm")
@click.option("--ray", is_flag=True, help="the runner arm as a Ray pool of one engine (--ray --dp_size 1)")
@click.option("--arms", default="runner,raw", help="comma-separated: runner, raw (vLLM only)")
@click.option("--repeats", type=int, default=1)
@click.option("--model", default=None, help="default: the tiny test model")
@click.option("--max_model_len", type=int, default=2048)
@click.option("--json_out", type=click.Path(dir_okay=False), default=None, help="also write the figures here")
@click.option("--child_raw", nargs=2, default=None, hidden=True)
def main(rows, image_size, window, n, backend, ray, arms, repeats, model, max_model_len, json_out, child_raw):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if model is None:
        from medvlthinker.demo.tiny import tiny_model_path

        model = str(tiny_model_path())
    if child_raw:
        _raw_child(child_raw[0], child_raw[1], model, window, n, max_model_len)
        return
    from medvlthinker.inference.memory_trace import summarize, trace
    from medvlthinker.inference.workloads import median_of

    names = [a for a in arms.split(",") if a]
    if backend != "vllm":
        names = [a for a in names if a != "raw"]
    if window == 0 and "raw" in names:
        raise click.UsageError("the raw arm needs a chunk size; fix: --window N, or --arms runner")
    results: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _make_data(tmp / "data", rows, image_size)
        for rep in range(repeats):
            for name in names if rep % 2 == 0 else list(reversed(names)):
                out = tmp / f"{name}-{rep}"
                if name == "runner":
                    cmd = [sys.executable, str(SCRIPT), "--model", model, "--backend", backend, "--dataset_name",
                           str(tmp / "data"), "--output_dir", str(out), "--max_tokens", "2", "--n", str(n),
                           "--max_model_len", str(max_model_len), "--batch_size", str(window or 8)]
                    cmd += ["--window", str(window)] if window else []
                    cmd += ["--temperature", "1.0"] if n > 1 else []
                    cmd += ["--ray"] if ray else []
                    pattern = str(out / "shard-*.jsonl")
                else:
                    cmd = [sys.executable, __file__, "--child_raw", str(tmp / "data"), str(out), "--model", model,
                           "--window", str(window), "--n", str(n), "--max_model_len", str(max_model_len)]
                    pattern = str(out / "progress.jsonl")
                code, samples = trace(cmd, pattern, log=tmp / f"{name}-{rep}.log")
                if code != 0:
                    raise click.ClickException(f"the {name} arm failed (exit {code}):\n"
                                               f"{(tmp / f'{name}-{rep}.log').read_text()[-3000:]}")
                summary = summarize(samples, rows)
                results[name].append(summary)
                click.echo(f"repetition {rep}, {name}: " + json.dumps(summary))
    label = (f"window {window}" if window else "default window") + (", Ray pool" if ray else "")
    click.echo(f"{backend}, {rows} rows of one {image_size}x{image_size} image, {label}, n={n}, max_tokens 2; "
               f"medians over {repeats} repetition(s):")
    table = {}
    for name, runs in results.items():
        med = {key: median_of([r[key] for r in runs]) for key in
               ("peak_rss_mb", "peak_anon_mb", "peak_quarter_rss_mb", "slope_rss_mb_per_row",
                "slope_anon_mb_per_row", "seconds") if all(r[key] is not None for r in runs)}
        table[name] = med
        ratio = med["peak_rss_mb"] / med["peak_quarter_rss_mb"] if med.get("peak_quarter_rss_mb") else float("nan")
        click.echo(f"  {name:>6}: peak RSS {med['peak_rss_mb']:.0f} MB (anonymous {med['peak_anon_mb']:.0f}); "
                   f"peak at {rows} rows / peak at {rows // 4} rows {ratio:.3f}; slope over the last half "
                   f"{med.get('slope_rss_mb_per_row', float('nan')):.3f} MB/row (anonymous "
                   f"{med.get('slope_anon_mb_per_row', float('nan')):.3f}); {med['seconds']:.0f} s")
    if json_out:
        Path(json_out).write_text(json.dumps({"settings": {"rows": rows, "image_size": image_size, "window": window,
                                                          "n": n, "backend": backend, "ray": ray,
                                                          "repeats": repeats},
                                              "medians": table, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
