"""Output tokens/s of raw vLLM ``LLM.generate`` versus this project's runner, on one engine and one workload.

GPU (the reference workload): the Qwen2.5-VL-3B architecture with dummy weights (configs/models/qwen2.5-vl-3b plus
the Qwen2.5 tokenizer in a temporary copy), 256 requests, one 448x448 image each, 512 output tokens (ignore_eos),
temperature 1.0. CPU (vLLM's CPU build): the tiny test model, 16 requests, 32 output tokens, 56x56 images.

    python eval/benchmark_throughput.py                  # picks GPU or CPU defaults
    python eval/benchmark_throughput.py --num_requests 64 --max_tokens 128

The runner path includes everything a real run does after start-up (engine and processor loaded, as for the raw
path): loading the data set, building the requests (chat template, image resize), streaming the engine, grading
and appending each record to a shard file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import click

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

REPO = Path(__file__).resolve().parent.parent


def _model_dir(on_gpu: bool, model: str | None, tmp: Path) -> tuple[str, str]:
    if model:
        return model, "auto"
    if on_gpu:
        from medvlthinker.tiny import build_qwen_tokenizer

        target = tmp / "qwen2.5-vl-3b"
        shutil.copytree(REPO / "configs" / "models" / "qwen2.5-vl-3b", target)
        build_qwen_tokenizer(target)
        return str(target), "dummy"
    from medvlthinker.tiny import tiny_model_path

    return str(tiny_model_path()), "auto"


@click.command(context_settings={"show_default": True})
@click.option("--model", default=None, help="default: 3B dummy weights on GPU, the tiny model on CPU")
@click.option("--num_requests", type=int, default=None, help="default: 256 on GPU, 16 on CPU")
@click.option("--max_tokens", type=int, default=None, help="default: 512 on GPU, 32 on CPU")
@click.option("--image_size", type=int, default=None, help="square image side; default 448 on GPU, 56 on CPU")
@click.option("--gpu_memory_utilization", type=float, default=0.9)
@click.option("--max_model_len", type=int, default=4096)
def main(model, num_requests, max_tokens, image_size, gpu_memory_utilization, max_model_len):
    import torch

    from medvlthinker import synthetic
    from medvlthinker.inference.backends import VllmBackend
    from medvlthinker.inference.runner import RunConfig, run_rank

    on_gpu = torch.cuda.is_available()
    num_requests = num_requests or (256 if on_gpu else 16)
    max_tokens = max_tokens or (512 if on_gpu else 32)
    image_size = image_size or (448 if on_gpu else 56)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, load_format = _model_dir(on_gpu, model, tmp)
        rows = synthetic.make_image_rows(n=num_requests, seed=0, image_size=(image_size, image_size))
        synthetic.to_dataset(rows).save_to_disk(str(tmp / "data"))
        config = RunConfig(model=model_dir, output_dir=str(tmp / "out"), dataset_name=str(tmp / "data"),
                           temperature=1.0, max_tokens=max_tokens, ignore_eos=True, progress=False,
                           gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)
        backend = VllmBackend(model_dir, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                              limit_mm_per_prompt={"image": 1, "video": 0}, seed=42, load_format=load_format)
        llm = backend.llm

        from transformers import AutoProcessor

        from medvlthinker.inference.requests import RequestBuilder

        builder = RequestBuilder(AutoProcessor.from_pretrained(model_dir))
        inputs = [builder.build(row).vllm_input() for row in rows]
        params = config.sampling.to_vllm()
        llm.generate(inputs[: min(8, len(inputs))], params, use_tqdm=False)  # warm-up, not timed

        t0 = time.perf_counter()
        outputs = llm.generate(inputs, params, use_tqdm=False)
        raw_s = time.perf_counter() - t0
        raw_tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)

        t0 = time.perf_counter()
        written = run_rank(config, 0, validated=True, backend=backend, builder=builder)
        runner_s = time.perf_counter() - t0
        runner_tokens = written * max_tokens  # ignore_eos: every rollout has exactly max_tokens tokens

    raw_tps, runner_tps = raw_tokens / raw_s, runner_tokens / runner_s
    device = torch.cuda.get_device_name(0) if on_gpu else "CPU (vLLM CPU build)"
    click.echo(f"device: {device}; model: {model_dir if model else ('3B dummy' if on_gpu else 'tiny')}")
    click.echo(f"workload: {num_requests} requests, one {image_size}x{image_size} image, {max_tokens} output tokens")
    click.echo(f"raw vLLM LLM.generate: {raw_tokens} tokens in {raw_s:.2f} s = {raw_tps:.1f} output tokens/s")
    click.echo(f"runner (run_rank):     {runner_tokens} tokens in {runner_s:.2f} s = {runner_tps:.1f} output tokens/s")
    click.echo(f"ratio runner/raw: {runner_tps / raw_tps:.3f}")


if __name__ == "__main__":
    main()
