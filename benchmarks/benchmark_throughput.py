"""Output tokens/s of raw vLLM ``LLM.generate`` versus this project's runner, on one engine and one workload.

GPU (the reference workload): the Qwen2.5-VL-3B architecture with dummy weights (configs/models/qwen2.5-vl-3b plus
the Qwen2.5 tokenizer in a temporary copy), 256 requests, one 448x448 image each, 512 output tokens (ignore_eos),
temperature 1.0. CPU (vLLM's CPU build): the tiny test model, 64 requests, 32 output tokens, 56x56 images.

    python benchmarks/benchmark_throughput.py                  # picks GPU or CPU defaults
    python benchmarks/benchmark_throughput.py --num_requests 64 --max_tokens 128 --repeats 5

Both arms start from the same rows and do the work any run must: render the prompts and resize the images
(the runner's RequestBuilder, shared), then generate. The raw arm builds every input first and calls
``LLM.generate`` once (the original's pattern); the runner arm is ``run_rank``: it also loads and validates the
data set, streams the rows through the engine's window, grades and appends each record to a shard file. The
arms alternate for ``--repeats`` repetitions; the ratio printed last is the median of the per-repetition ratios.
"""

from __future__ import annotations

import os
import tempfile

import click

from medvlthinker import cli

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@cli.command(context_settings={"show_default": True})
@click.option("--model", default=None, help="default: 3B dummy weights on GPU, the tiny model on CPU")
@click.option("--num_requests", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
@click.option("--max_tokens", type=int, default=None, help="default: 512 on GPU, 32 on CPU")
@click.option("--image_size", type=int, default=None, help="square image side; default 448 on GPU, 56 on CPU")
@click.option("--repeats", type=int, default=3, help="interleaved repetitions (raw, runner / runner, raw, ...)")
@click.option("--window", type=int, default=None, help="the runner's window (default: the engine's capacity)")
@click.option("--gpu_memory_utilization", type=float, default=0.9)
@click.option("--max_model_len", type=int, default=4096)
def main(model, num_requests, max_tokens, image_size, repeats, window, gpu_memory_utilization, max_model_len):
    import torch

    from medvlthinker.inference.workloads import arms_report, benchmark_model, compare_raw_and_runner

    on_gpu = torch.cuda.is_available()
    num_requests = num_requests or (256 if on_gpu else 64)
    max_tokens = max_tokens or (512 if on_gpu else 32)
    image_size = image_size or (448 if on_gpu else 56)
    with tempfile.TemporaryDirectory() as tmp_name:
        model_dir, load_format = benchmark_model(model, on_gpu, tmp_name)
        results, window = compare_raw_and_runner(
            model_dir, tmp_name, num_requests=num_requests, max_tokens=max_tokens, image_size=image_size,
            repeats=repeats, window=window, load_format=load_format, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len)

    device = torch.cuda.get_device_name(0) if on_gpu else "CPU (vLLM CPU build)"
    click.echo(f"device: {device}; model: {model_dir if model else ('3B dummy' if on_gpu else 'tiny')}")
    click.echo(f"workload: {num_requests} requests, one {image_size}x{image_size} image, {max_tokens} output tokens; "
               f"runner window {window}")
    medians = {"raw": "raw vLLM LLM.generate:", "runner": "runner (run_rank):"}
    for line in arms_report(results, repeats, ratio="ratio", medians=medians, summary="ratio runner/raw"):
        click.echo(line)


if __name__ == "__main__":
    main()
