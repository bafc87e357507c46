"""Throughput of SFT training steps on one device: tokens/s and MFU (``benchmarks/benchmark_sft.py``)."""

from __future__ import annotations

from typing import Any

from medvlthinker.train.sft_config import SFTRunConfig

# Dense bf16 peak of one device, for MFU (vendor datasheets, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "H20": 148e12, "L40S": 362e12}


def training_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per text token of a Qwen2.5-VL language model: 6 x (non-embedding + LM-head params)
    for the matrix multiplies, plus 12 x layers x hidden x seq_len for attention scores (the PaLM estimate)."""
    text = config.get_text_config()
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = hidden // heads
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o, k, v projections
    mlp = 3 * hidden * text.intermediate_size
    matmul_params = layers * (attn + mlp) + hidden * text.vocab_size  # the LM head is a matmul too
    return 6.0 * matmul_params + 12.0 * layers * hidden * seq_len


def peak_flops(device: str) -> float | None:
    """bf16 peak of the current GPU from :data:`PEAK_BF16_FLOPS`, or None (CPU, unknown GPU)."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def benchmark_sft_step(
    model_dir: str,
    *,
    seq_len: int = 2048,
    batch_size: int = 1,
    steps: int = 5,
    warmup: int = 2,
    random_weights: bool = False,
    gradient_checkpointing: bool = True,
    peak: float | None = None,
) -> dict[str, Any]:
    """Tokens/s and MFU of full training steps (forward, backward, AdamW with the paper's betas) on one device.

    Text-only sequences of ``seq_len`` random token ids (throughput does not depend on the ids or the weights);
    ``random_weights`` builds the model from ``model_dir``'s config.json alone (the config-only dirs in
    configs/models). Returns the figures as a dict.
    """
    import resource
    import time

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from medvlthinker.compat.cpu_allocator import keep_freed_memory_on_cpu

    keep_freed_memory_on_cpu()  # as the trainer does (medvlthinker.train.sft)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = AutoConfig.from_pretrained(model_dir)
    if random_weights:
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    else:
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    model.to(device).train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    # the paper's optimizer settings, read from the SFT config's defaults
    optimizer = torch.optim.AdamW(model.parameters(), lr=SFTRunConfig.learning_rate,
                                  betas=(SFTRunConfig.adam_beta1, SFTRunConfig.adam_beta2),
                                  weight_decay=SFTRunConfig.weight_decay)
    vocab = config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(vocab, 151643), (batch_size, seq_len), generator=gen).to(device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    tokens_per_s = batch_size * seq_len * steps / elapsed
    flops_per_token = training_flops_per_token(config, seq_len)
    peak = peak if peak is not None else peak_flops(device)
    return {
        "model_dir": str(model_dir),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "params": sum(p.numel() for p in model.parameters()),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "steps": steps,
        "gradient_checkpointing": gradient_checkpointing,
        "seconds_per_step": elapsed / steps,
        "tokens_per_s": tokens_per_s,
        "tflops_per_s": tokens_per_s * flops_per_token / 1e12,
        "mfu": tokens_per_s * flops_per_token / peak if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        # the host process: system time and minor page faults of the timed steps, peak resident memory
        "sys_s_per_step": (after.ru_stime - before.ru_stime) / steps,
        "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
        "peak_rss_gib": after.ru_maxrss / 2**20,
    }


def compare_cpu_allocators(model_dir: str, *, repeats: int = 3, **step_kwargs) -> list[dict[str, Any]]:
    """:func:`benchmark_sft_step` in fresh processes, alternately with glibc's default allocator settings
    (``MEDVLTHINKER_KEEP_FREED_MEMORY=0``) and with :mod:`medvlthinker.compat.cpu_allocator`'s, ``repeats`` times
    each in interleaved order (the first setting alternates too). Returns one figures dict per process, with
    ``keep_freed_memory`` and ``repeat`` added; a setting cannot be undone in a process, hence the processes."""
    import json
    import os
    import subprocess
    import sys

    from medvlthinker.compat.cpu_allocator import ENV

    code = ("import json, sys; from medvlthinker.train.sft_benchmark import benchmark_sft_step; "
            "print(json.dumps(benchmark_sft_step(*sys.argv[1:2], **json.loads(sys.argv[2]))))")
    results = []
    for repeat in range(repeats):
        for keep in ((False, True) if repeat % 2 == 0 else (True, False)):
            env = dict(os.environ, **{ENV: "1" if keep else "0"})
            proc = subprocess.run([sys.executable, "-c", code, str(model_dir), json.dumps(step_kwargs)], env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"benchmark process failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(dict(figures, keep_freed_memory=keep, repeat=repeat))
    return results
