"""The cluster check's five parts (docs/performance.md): each runs one code path of the recipe and returns its figures."""


from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlthinker.cluster.stack import (
    RATIO_GOAL,
    RL_CONFIG,
    ROOT,
    SFT_CONFIG,
    PartFailed,
    Profile,
    flash_attn_problem,
    gpu_problem,
    require,
    vllm_problem,
)


def run_logged(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` from the repository root, copying its output to this process's as it comes (the part's log);
    returns the exit code and the output."""
    print("+ " + " ".join(cmd), flush=True)
    lines = []
    with subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        sys.stdout.flush()
    return proc.returncode, "".join(lines)


def last_error(log: str) -> str:
    """The most telling line of a failed command's log: the last error line, else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line.split(":", 1)[0]:
            return line[:400]
    return (lines[-1] if lines else "no output")[:400]


@dataclass
class Context:
    profile: Profile
    work: Path
    remove_padding: bool = True
    rl_overrides: tuple[str, ...] = ()  # appended to the grpo part's Hydra overrides (the last value of a key wins)
    engine: Any = None  # the vLLM engine of parts 1 and 2, which run in one process

    @property
    def model_dir(self) -> Path:
        return self.work / "qwen2.5-vl-3b"

    @property
    def grpo_actor(self) -> Path:
        return self.work / "grpo" / "ckpt" / "global_step_2" / "actor"


def prepare_model(ctx: Context, *, weights: bool) -> Path:
    """The model every part loads: the tiny model (cpu), or the 3B architecture with the Qwen2.5 tokenizer, and
    random bf16 weights when ``weights`` (training parts; vLLM alone loads dummy weights)."""
    if ctx.profile.model == "tiny":
        from medvlthinker.demo.tiny import tiny_model_path

        return tiny_model_path()
    target = ctx.model_dir
    if not (target / "config.json").is_file():
        from medvlthinker.inference.workloads import benchmark_model

        # configs/models/qwen2.5-vl-3b and the Qwen2.5 tokenizer, as the throughput benchmark builds them
        target = Path(benchmark_model(None, True, ctx.work)[0])
    if weights and not (target / "model.safetensors.index.json").is_file() and not (target / "model.safetensors").is_file():
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        config = AutoConfig.from_pretrained(target)
        with torch.device(ctx.profile.device):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(target)
        AutoProcessor.from_pretrained(target).save_pretrained(target)
        del model
        if ctx.profile.device == "cuda":
            torch.cuda.empty_cache()  # the part's own run (verl's processes, TRL) needs the whole GPU
    return target


def _throughput(ctx: Context, *, requests: int, max_tokens: int, n: int) -> dict[str, Any]:
    from medvlthinker.inference.workloads import compare_raw_and_runner, median_of

    require(gpu_problem(ctx.profile), vllm_problem())
    model = prepare_model(ctx, weights=False)
    if ctx.engine is None:
        from medvlthinker.inference.backends import VllmBackend

        ctx.engine = VllmBackend(str(model), gpu_memory_utilization=ctx.profile.gpu_memory_utilization,
                                 max_model_len=4096, limit_mm_per_prompt={"image": 1, "video": 0}, seed=42,
                                 load_format="dummy" if ctx.profile.model != "tiny" else "auto")
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        results, window = compare_raw_and_runner(
            str(model), tmp, num_requests=requests, max_tokens=max_tokens, image_size=ctx.profile.image_size, n=n,
            repeats=ctx.profile.repeats, gpu_memory_utilization=ctx.profile.gpu_memory_utilization, max_model_len=4096,
            backend=ctx.engine)
    ratios = [b / a for a, b in zip(results["raw"], results["runner"])]
    figures = {
        "requests": requests, "samples_per_request": n, "output_tokens": max_tokens,
        "image_size": ctx.profile.image_size, "repetitions": ctx.profile.repeats, "runner_window": window,
        "raw_tokens_per_s": median_of(results["raw"]), "runner_tokens_per_s": median_of(results["runner"]),
        "ratio": median_of(ratios),
        "raw_tokens_per_s_each": results["raw"], "runner_tokens_per_s_each": results["runner"],
    }
    if ctx.profile.device == "cuda":
        figures["goal"] = RATIO_GOAL
        figures["goal_met"] = figures["ratio"] >= RATIO_GOAL
    return figures


def part_eval_runner(ctx: Context) -> dict[str, Any]:
    return _throughput(ctx, requests=ctx.profile.requests, max_tokens=ctx.profile.max_tokens, n=1)


def part_pass_rate(ctx: Context) -> dict[str, Any]:
    return _throughput(ctx, requests=ctx.profile.pass_rate_questions, max_tokens=ctx.profile.pass_rate_max_tokens,
                       n=ctx.profile.pass_rate_n)


def grpo_overrides(ctx: Context, model: Path, parquet: Path, gpus: int) -> list[str]:
    """Hydra overrides of the GRPO part over the paper config and the profile's overlay."""
    overrides = [f"actor_rollout_ref.model.path={model}", f"data.train_files=[{parquet}]",
                 f"data.val_files=[{parquet}]", f"trainer.default_local_dir={ctx.grpo_actor.parents[1]}",
                 "trainer.total_training_steps=2", "trainer.save_freq=2"]
    if ctx.profile.device == "cuda":
        overrides.append(f"trainer.n_gpus_per_node={gpus}")
        if not ctx.remove_padding:
            overrides += ["actor_rollout_ref.model.use_remove_padding=false",
                          "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"]
    return overrides + list(ctx.rl_overrides)


def part_grpo(ctx: Context) -> dict[str, Any]:
    from medvlthinker.analysis.demo_summary import step_metrics
    from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet
    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic

    require(gpu_problem(ctx.profile), vllm_problem(),
            flash_attn_problem() if ctx.profile.device == "cuda" and ctx.remove_padding else None)
    import torch

    model = prepare_model(ctx, weights=True)
    work = ctx.work / "grpo"
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / "train.parquet"
    size = ctx.profile.image_size
    rows = synthetic.make_image_rows(n=ctx.profile.rl_rows, seed=3, image_size=(size, size))
    write_verl_parquet(convert_to_verl(to_dataset(rows)), parquet)
    gpus = torch.cuda.device_count() if ctx.profile.device == "cuda" else 1
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHON": sys.executable, "RAY_TMPDIR": ray_tmp, "PREFLIGHT_ROWS": "4"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # verl's async vLLM server runs its own engine processes
    overlay = ROOT / "configs" / "rl" / "overlays" / f"{ctx.profile.rl_overlay}.yaml"
    cmd = ["bash", str(ROOT / "train" / "rl" / "train.sh"), str(RL_CONFIG), str(overlay),
           *grpo_overrides(ctx, model, parquet, gpus)]
    started = time.perf_counter()
    try:
        rc, log = run_logged(cmd, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    steps = step_metrics(log)
    if rc != 0:
        raise PartFailed(f"train/rl/train.sh ended with exit code {rc} after {len(steps)} step(s): {last_error(log)}")
    if sorted(steps) != [1, 2]:
        raise PartFailed(f"verl logged steps {sorted(steps)}, not [1, 2]; see the log")
    last = steps[2]
    figures = {
        "gpus": gpus, "rows": ctx.profile.rl_rows, "remove_padding": ctx.remove_padding,
        "seconds_whole_command": seconds,
        "seconds_per_step": last.get("timing_s/step"),
        "tokens_per_s_per_gpu": last.get("perf/throughput"),
        "rollout_probs_diff_max": last.get("training/rollout_probs_diff_max"),
        "rollout_probs_diff_mean": last.get("training/rollout_probs_diff_mean"),
        "response_length_mean": last.get("response_length/mean"),
        "steps": {str(n): {k: m[k] for k in ("timing_s/step", "perf/throughput", "training/rollout_probs_diff_max",
                                             "training/rollout_probs_diff_mean") if k in m}
                  for n, m in steps.items()},
    }
    missing = [k for k in ("seconds_per_step", "tokens_per_s_per_gpu", "rollout_probs_diff_max")
               if not isinstance(figures[k], float) or not math.isfinite(figures[k])]
    if missing:
        raise PartFailed(f"verl's step 2 lacks a finite {', '.join(missing)}; see the log")
    if not ctx.grpo_actor.is_dir():
        raise PartFailed(f"no checkpoint at {ctx.grpo_actor} after two steps; see the log")
    return figures


def part_sft(ctx: Context) -> dict[str, Any]:
    from transformers import AutoConfig, TrainerCallback

    from medvlthinker.converters.sft_format import convert_to_sft, write_sft_dataset
    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic
    from medvlthinker.train.sft import run_sft
    from medvlthinker.train.sft_benchmark import peak_flops, training_flops_per_token
    from medvlthinker.train.sft_config import load_config

    require(gpu_problem(ctx.profile))
    model = prepare_model(ctx, weights=True)
    work = ctx.work / "sft"
    steps = ctx.profile.sft_steps
    rows = synthetic.make_text_rows(n=steps + 1, seed=4)  # the 3B SFT row is m23k: text-only
    data = write_sft_dataset(convert_to_sft(to_dataset(rows)), work / "data", overwrite=True)
    cfg = load_config(SFT_CONFIG, [f"model_name_or_path={model}", f"train_data={data}", f"output_dir={work / 'run'}",
                                   f"max_steps={steps}", "save_strategy=no", "global_batch_size=1",
                                   "per_device_train_batch_size=1", "logging_steps=1", "report_to=[none]",
                                   *ctx.profile.sft_overrides])

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if ctx.profile.device == "cuda":
                import torch

                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    timer = StepTimes()
    trainer = run_sft(cfg, train_dataset=None, callbacks=[timer])
    logged = [h for h in trainer.state.log_history if "num_tokens" in h and "loss" in h]
    if len(timer.ends) != steps or len(logged) != steps:
        raise PartFailed(f"the trainer ran {len(timer.ends)} steps and logged {len(logged)}, not {steps}")
    losses = [h["loss"] for h in logged]
    if not all(math.isfinite(x) for x in losses):
        raise PartFailed(f"a loss is not finite: {losses}")
    # the first step (kernel selection, allocator warm-up) is left out of the timing
    tokens = logged[-1]["num_tokens"] - logged[0]["num_tokens"]
    seconds = timer.ends[-1] - timer.ends[0]
    tokens_per_s = tokens / seconds
    seq_len = logged[-1]["num_tokens"] / steps
    flops = training_flops_per_token(AutoConfig.from_pretrained(model), int(seq_len)) * tokens_per_s
    peak = peak_flops(ctx.profile.device)
    return {
        "steps": steps, "timed_steps": steps - 1, "tokens_per_step": seq_len,
        "seconds_per_step": seconds / (steps - 1), "tokens_per_s": tokens_per_s, "tflops_per_s": flops / 1e12,
        "mfu": flops / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
        "loss_first": losses[0], "loss_last": losses[-1],
    }


def part_merge(ctx: Context) -> dict[str, Any]:
    require(gpu_problem(ctx.profile))
    if not ctx.grpo_actor.is_dir():
        raise PartFailed(f"no GRPO checkpoint at {ctx.grpo_actor}: the merge needs the grpo part's; fix: run the "
                         "grpo part (it did not pass or was skipped)")
    target = ctx.work / "merged"
    cmd = ["bash", str(ROOT / "train" / "merge.sh"), "verl", str(ctx.grpo_actor), str(target)]
    started = time.perf_counter()
    rc, log = run_logged(cmd, {**os.environ, "PYTHON": sys.executable})
    seconds = time.perf_counter() - started
    if rc != 0:
        raise PartFailed(f"train/merge.sh verl ended with exit code {rc}: {last_error(log)}")
    generated = [line for line in log.splitlines() if line.startswith("check: generated")]
    if not generated:
        raise PartFailed("the merged model was not loaded and generated from (no 'check: generated' line)")
    return {"seconds_merge_load_generate": seconds, "generated": generated[-1].removeprefix("check: generated ")}


PART_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "eval_runner": part_eval_runner, "pass_rate": part_pass_rate, "grpo": part_grpo, "sft": part_sft,
    "merge": part_merge,
}

