"""Shared fixtures: a tiny random Qwen2.5-VL with the real tokenizer, and synthetic data in the unified schema.

Everything is offline: the model directory is built once per transformers version and cached under
``.cache/`` (or ``$MEDVLTHINKER_CACHE``); synthetic data sets are written per test session.
"""

from __future__ import annotations

import os

# Offline, and vLLM's CPU build in-process with a small KV cache (the multiprocess engine costs ~20 s a start).
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

import pytest  # noqa: E402

from medvlthinker.data import to_dataset  # noqa: E402
from medvlthinker.demo import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir():
    """Path of the tiny random Qwen2.5-VL model directory (config, safetensors, processor, chat template)."""
    from medvlthinker.demo.tiny import tiny_model_path

    return tiny_model_path()


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def eval_rows():
    """Synthetic rows for the six benchmarks (4 per benchmark), with PIL images."""
    return synthetic.make_eval_rows(rows_per_benchmark=4, seed=0)


@pytest.fixture(scope="session")
def eval_dataset_dir(tmp_path_factory, eval_rows):
    """The synthetic evaluation set saved with ``save_to_disk`` (the layout of a local HF data set)."""
    path = tmp_path_factory.mktemp("data") / "eval"
    to_dataset(eval_rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def train_text_rows():
    """m23k-shaped text-only rows with reasoning."""
    return synthetic.make_text_rows(n=16, seed=1)


@pytest.fixture(scope="session")
def train_image_rows():
    """PMC-VQA-shaped single-image rows with reasoning."""
    return synthetic.make_image_rows(n=16, seed=2)


def sensitive_copy(model_dir, out, scale: float = 8.0):
    """The tiny random model with every matrix scaled by ``scale``. The tiny model's near-uniform next-token
    distribution hides a wrong input (a picture the rollout sees as noise changes a token's log probability by
    less than 1e-3); scaled, its outputs depend strongly on every input, so the two engines must really agree."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    weights = load_file(str(Path(out) / "model.safetensors"))
    save_file({k: v * scale if v.dim() >= 2 else v for k, v in weights.items()}, str(Path(out) / "model.safetensors"),
              metadata={"format": "pt"})
    return Path(out)


def online_filter_overrides() -> list[str]:
    """configs/rl/overlays/online_filter.yaml as Hydra overrides (its settings, read from the file)."""
    from pathlib import Path

    import yaml

    overlay = Path(__file__).resolve().parent.parent / "configs" / "rl" / "overlays" / "online_filter.yaml"
    settings = yaml.safe_load(overlay.read_text())["algorithm"]["filter_groups"]
    return [f"algorithm.filter_groups.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in settings.items()]


GRPO_TEXT_ROWS = 2  # data.train_batch_size of the CPU overlay: the whole first batch


@pytest.fixture(scope="session")
def cluster_check_cpu(tmp_path_factory, tiny_model_dir, train_text_rows, train_image_rows):
    """One run of ``scripts/cluster_check.sh --profile cpu --keep_work`` (all five parts), shared by
    tests/test_cluster_check.py and tests/test_grpo_cpu.py: its grpo part is the suite's verl GRPO run and its merge
    part the merge of that checkpoint. The grpo part gets what test_grpo_cpu.py checks: the scaled tiny model, a
    first batch without pictures (an m23k step) then one with pictures, in that order, a reward that spreads the
    rollouts of a prompt, and a step size that moves the weights visibly in two steps (the paper's 1e-6 would round
    away); and the compat modules report what they install."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet

    root = Path(__file__).resolve().parent.parent
    work = tmp_path_factory.mktemp("cluster_check")
    model = sensitive_copy(tiny_model_dir, work / "model")
    parquet = work / "train.parquet"
    rows = train_text_rows[:GRPO_TEXT_ROWS] + train_image_rows[:6]
    write_verl_parquet(convert_to_verl(to_dataset(rows)), parquet)
    out = work / "out"
    overrides = [f"actor_rollout_ref.model.path={model}", f"data.train_files=[{parquet}]",
                 f"data.val_files=[{parquet}]", "data.shuffle=false",
                 f"reward.custom_reward_function.path={root / 'tests' / 'spread_reward.py'}",
                 "actor_rollout_ref.actor.optim.lr=1e-3",
                 # configs/rl/overlays/online_filter.yaml (tests/test_grpo_cpu.py checks verl dropped a group)
                 *online_filter_overrides()]
    cmd = ["bash", str(root / "scripts" / "cluster_check.sh"), "--profile", "cpu", "--out", str(out), "--keep_work",
           *[a for o in overrides for a in ("--rl_override", o)]]
    env = {**os.environ, "PYTHON": sys.executable, "MEDVLTHINKER_COMPAT_VERBOSE": "1", "RAY_DEDUP_LOGS": "0"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    return {"proc": proc, "out": out, "model": model, "seconds": time.perf_counter() - started}
