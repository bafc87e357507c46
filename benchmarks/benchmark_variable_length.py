"""Variable-length answers: the runner's streaming window against the original's blocking chunks of 256.

Each row's answer length is drawn from an exponential distribution around its benchmark's mean generated tokens
(medvlthinker.inference.workloads.EVAL_SET, in the eval set's row order), times ``--scale``; generation ignores
the end-of-sequence token, so every answer has exactly its length. Both arms build their requests from the same
rows with the same builder, on one engine:

- chunked: 256 rows at a time, ``LLM.generate`` on the chunk, wait for its longest answer, next chunk;
- runner: ``run_rank`` (window: the engine's capacity), records appended as they finish.

    python benchmarks/benchmark_variable_length.py                       # CPU: 512 rows, lengths x 0.1
    python benchmarks/benchmark_variable_length.py --num_rows 2048 --scale 1.0 --model M   # GPU
    python benchmarks/benchmark_variable_length.py --keep_records runs/varlen
    python benchmarks/benchmark_balance.py runs/varlen                 # its data-parallel balance

Prints output tokens/s of each arm per repetition and the median speed-up over ``--repeats`` interleaved
repetitions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import click

from medvlthinker import cli

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

CHUNK = 256  # the original recipe's blocking chunk


@cli.command(context_settings={"show_default": True})
@click.option("--model", default=None, help="default: the tiny test model (CPU) / 3B dummy weights (GPU)")
@click.option("--num_rows", type=int, default=None, help="default: 512 on CPU, 2048 on GPU")
@click.option("--scale", type=float, default=None, help="answer lengths x this; default 0.1 on CPU, 1.0 on GPU")
@click.option("--image_size", type=int, default=56)
@click.option("--repeats", type=int, default=3)
@click.option("--window", type=int, default=None, help="the runner's window (default: the engine's capacity)")
@click.option("--seed", type=int, default=0, help="seed of the answer lengths")
@click.option("--max_model_len", type=int, default=4096)
@click.option("--keep_records", type=click.Path(file_okay=False), default=None,
              help="copy the last runner repetition's records here (input for benchmarks/benchmark_balance.py)")
def main(model, num_rows, scale, image_size, repeats, window, seed, max_model_len, keep_records):
    import datasets
    import torch
    from transformers import AutoProcessor

    from medvlthinker.data import to_dataset
    from medvlthinker.inference.backends import VllmBackend
    from medvlthinker.inference.records import merge_results, shard_name
    from medvlthinker.inference.run_config import RunConfig
    from medvlthinker.inference.workloads import (
        arms_report,
        benchmark_model,
        eval_set_lengths,
        eval_set_rows,
        fixed_length_builder,
        interleaved_repeats,
        runner_arm,
    )

    on_gpu = torch.cuda.is_available()
    num_rows = num_rows or (2048 if on_gpu else 512)
    scale = scale if scale is not None else (1.0 if on_gpu else 0.1)
    lengths = eval_set_lengths(rows=num_rows, scale=scale, seed=seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, load_format = benchmark_model(model, on_gpu, tmp)
        rows = eval_set_rows(num_rows, image_size=(image_size, image_size), seed=seed)
        to_dataset(rows).save_to_disk(str(tmp / "data"))
        backend = VllmBackend(model_dir, max_model_len=max_model_len, limit_mm_per_prompt={"image": 1, "video": 0},
                              seed=42, load_format=load_format)
        llm = backend.llm
        builder = fixed_length_builder(AutoProcessor.from_pretrained(model_dir), lengths)
        base = RunConfig(model=model_dir, output_dir="", dataset_name=str(tmp / "data"), temperature=1.0,
                         max_tokens=max(lengths), ignore_eos=True, progress=False, window=window,
                         max_model_len=max_model_len)
        params = base.sampling.to_vllm()

        def per_request(request):
            clone = params.clone()
            clone.max_tokens = request.max_tokens
            return clone

        warm = [builder.build(row) for row in rows[:8]]
        llm.generate([r.vllm_input() for r in warm], [per_request(r) for r in warm], use_tqdm=False)

        def chunked() -> float:
            t0 = time.perf_counter()
            stored = datasets.load_from_disk(str(tmp / "data"))
            tokens = 0
            for start in range(0, len(stored), CHUNK):
                requests = [builder.build(row) for row in stored.select(range(start, min(start + CHUNK, len(stored))))]
                outputs = llm.generate([r.vllm_input() for r in requests], [per_request(r) for r in requests],
                                       use_tqdm=False)
                tokens += sum(len(c.token_ids) for o in outputs for c in o.outputs)
            return tokens / (time.perf_counter() - t0)

        runner = runner_arm(base, tmp, backend, builder)
        results = interleaved_repeats({"chunked": chunked, "runner": runner}, repeats)
        capacity = backend.default_window(base.sampling)
        if keep_records:
            Path(keep_records).mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(runner.last) / shard_name(0, 1), Path(keep_records) / shard_name(0, 1))
            merge_results(keep_records, expected_rows=num_rows)

    click.echo(f"workload: {num_rows} rows in the eval set's benchmark order, answer lengths exponential around "
               f"the benchmark means x {scale} (mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)} tokens); "
               f"engine max_num_seqs {backend.max_num_seqs}, runner window {window or capacity}, chunks of {CHUNK}")
    medians = {"chunked": f"chunks of {CHUNK}:", "runner": "runner:"}
    lines = arms_report(results, repeats, ratio="runner/chunked", medians=medians, summary="speed-up runner/chunked")
    click.echo("\n".join(lines))
    if keep_records:
        click.echo(f"records of the last runner repetition: {keep_records}")


if __name__ == "__main__":
    main()
