"""The cluster check (scripts/cluster_check.sh): its CPU profile end to end, and one line per part when a
prerequisite is missing (no GPU, a vLLM that does not import, no flash-attn, no GRPO checkpoint)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker.cluster import cluster_check, parts, stack
from medvlthinker.cluster.parts import Context
from medvlthinker.cluster.stack import PARTS, PROFILES

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cluster_check.sh"


def run_script(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, "PYTHON": sys.executable, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def printed_document(proc: subprocess.CompletedProcess) -> dict:
    """The JSON document the check prints on stdout (the last line there names the files, on stderr)."""
    return json.loads(proc.stdout)


def test_gpu_profile_without_a_gpu_fails_each_part_with_one_line(tmp_path):
    proc = run_script("--profile", "gpu", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    doc = printed_document(proc)
    assert doc == json.loads((tmp_path / "cluster_check.json").read_text())
    assert list(doc["parts"]) == list(PARTS) and doc["passed"] is False
    for name, part in doc["parts"].items():
        assert part["status"] == "fail", name
        assert part["cause"].startswith("no GPU: torch ") and "fix: " in part["cause"] and "\n" not in part["cause"]
    for key in ("torch", "cuda", "vllm", "verl", "transformers", "trl", "flash_attn", "gpu"):
        assert key in doc["versions"]
    summary = (tmp_path / "cluster_check.md").read_text()
    assert summary.count("| fail | ") == len(PARTS) and "Result: FAIL" in summary
    assert not (tmp_path / "work").exists()  # removed unless --keep_work


def test_a_vllm_that_does_not_import_fails_its_parts_with_one_line(tmp_path):
    # a vLLM install that breaks on import (a CUDA library missing, as on a node with the wrong driver), put first
    # on the path of the parts' processes
    broken = tmp_path / "site" / "vllm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise ImportError('libcudart.so.13: cannot open shared object file: No such file or directory')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    proc = run_script("--profile", "cpu", "--skip", "sft,merge", "--out", str(tmp_path / "out"), env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    parts = printed_document(proc)["parts"]
    for name in ("eval_runner", "pass_rate", "grpo"):
        assert parts[name]["status"] == "fail"
        assert parts[name]["cause"].startswith("vLLM does not import (ImportError: libcudart.so.13: cannot open"), \
            parts[name]["cause"]
    assert parts["sft"]["status"] == parts["merge"]["status"] == "skipped"


def test_no_flash_attn_is_one_line_naming_the_fix():
    # read from this machine, which has no flash-attn
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed here")
    except ImportError:
        pass
    line = stack.flash_attn_problem()
    assert line.startswith("no flash-attn (ModuleNotFoundError: No module named 'flash_attn')")
    assert "remove-padding" in line and "--no_remove_padding" in line and "\n" not in line
    # without it, --no_remove_padding times GRPO with SDPA attention instead
    ctx = Context(profile=PROFILES["gpu"], work=Path("/w"), remove_padding=False)
    overrides = parts.grpo_overrides(ctx, Path("/m"), Path("/d.parquet"), gpus=8)
    assert "actor_rollout_ref.model.use_remove_padding=false" in overrides
    assert "trainer.n_gpus_per_node=8" in overrides


def test_merge_without_a_grpo_checkpoint_names_the_grpo_part(tmp_path):
    cluster_check.run_part("merge", Context(profile=PROFILES["cpu"], work=tmp_path), tmp_path / "merge.json")
    result = json.loads((tmp_path / "merge.json").read_text())
    assert result["status"] == "fail"
    assert result["cause"].startswith("no GRPO checkpoint at ") and "run the grpo part" in result["cause"]
    # in the part's own process too, the gpu profile on this machine stops at the GPU, before anything else
    cluster_check.run_part("merge", Context(profile=PROFILES["gpu"], work=tmp_path), tmp_path / "merge.json")
    assert json.loads((tmp_path / "merge.json").read_text())["cause"].startswith("no GPU: torch ")


def test_unknown_part_is_one_line(tmp_path):
    proc = run_script("--profile", "cpu", "--skip", "grpo,rlhf", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --skip: unknown part rlhf; fix: name parts of eval_runner, pass_rate, grpo, sft, merge")


def test_the_gpu_overlay_passes_verls_validation():
    from medvlthinker.train.preflight_config import PreflightReport, compose_config, validate_with_verl

    for gpus in (1, 8):
        cfg = compose_config(stack.RL_CONFIG, ["+overlays=[cluster_check]", f"trainer.n_gpus_per_node={gpus}",
                                                       "actor_rollout_ref.model.path=/m", "data.train_files=[/d]",
                                                       "data.val_files=[/d]"])
        validate_with_verl(cfg, PreflightReport(config="cluster_check"))
        assert cfg.trainer.total_training_steps == 2 and cfg.trainer.save_freq == 2
        assert cfg.actor_rollout_ref.model.use_remove_padding is True  # the paper's, kept
        assert list(cfg.actor_rollout_ref.actor.checkpoint.save_contents) == ["model"]


# ---------------------------------------------------------------- the CPU profile, end to end


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.vllm
def test_cpu_profile_runs_every_part_and_prints_the_json(cluster_check_cpu):
    # the run (conftest.py) also feeds tests/test_grpo_cpu.py, which checks its GRPO steps and merge in detail
    proc, out = cluster_check_cpu["proc"], cluster_check_cpu["out"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = printed_document(proc)
    assert doc == json.loads((out / "cluster_check.json").read_text())
    assert doc["passed"] is True and doc["profile"] == "cpu"
    assert {name: p["status"] for name, p in doc["parts"].items()} == dict.fromkeys(PARTS, "pass"), \
        {name: p["cause"] for name, p in doc["parts"].items()}
    versions = doc["versions"]
    assert versions["torch"].startswith("2.") and versions["verl"] and versions["vllm"] and versions["trl"]
    assert versions["gpu"] is None and versions["gpu_count"] == 0
    parts = {name: p["figures"] for name, p in doc["parts"].items()}
    for name in ("eval_runner", "pass_rate"):
        f = parts[name]
        assert len(f["raw_tokens_per_s_each"]) == len(f["runner_tokens_per_s_each"]) == 3
        assert _positive(f["raw_tokens_per_s"]) and _positive(f["runner_tokens_per_s"]) and _positive(f["ratio"])
        assert "goal" not in f  # the 0.95 goal is a GPU goal
    assert parts["pass_rate"]["samples_per_request"] == 16
    grpo = parts["grpo"]
    assert _positive(grpo["seconds_per_step"]) and _positive(grpo["tokens_per_s_per_gpu"])
    assert sorted(grpo["steps"]) == ["1", "2"] and grpo["remove_padding"] is True
    assert 0 <= grpo["rollout_probs_diff_max"] < 1e-3  # float32 rollout and actor: they agree
    sft = parts["sft"]
    assert sft["steps"] == 10 and _positive(sft["tokens_per_s"]) and _positive(sft["tflops_per_s"])
    assert sft["mfu"] is None  # no known peak for a CPU
    assert parts["merge"]["generated"]
    summary = (out / "cluster_check.md").read_text()
    assert "Result: PASS" in summary and summary.count("| pass | ") == len(PARTS)
    assert (out / "work" / "merged").is_dir()  # --keep_work
    print(f"cluster check, cpu profile: {cluster_check_cpu['seconds']:.0f} s")
