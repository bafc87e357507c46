"""vLLM (CPU build) against transformers on the same synthetic eval set, greedy: the record files must agree in
everything but the generated text (and its token count). The vLLM run streams its 12 rows through a window of 2
requests, refilled as each finishes; the engine's own count of unfinished requests must never exceed it, and its
multimodal processor cache is off. One
engine start, in a subprocess (vLLM's CPU build wants a __main__ guard)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker.grading import grade_rollout
from medvlthinker.inference.records import read_records

SCRIPT = Path(__file__).resolve().parent.parent / "eval" / "run_offline_inference.py"
TEXT_FIELDS = {"output_text", "pred_letter", "is_correct", "output_tokens", "finish_reason"}


def _strip_text(record):
    out = {k: v for k, v in record.items() if k not in ("num_correct",)}
    out["rollouts"] = [{k: v for k, v in r.items() if k not in TEXT_FIELDS} for r in record["rollouts"]]
    return out


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_and_hf_records_agree(tmp_path, tiny_model_dir, eval_dataset_dir):
    common = ["--model", str(tiny_model_dir), "--dataset_name", str(eval_dataset_dir), "--max_tokens", "4",
              "--max_pixels", str(64 * 28 * 28), "--subset", "pmc_vqa,MMMU-medical,slake_closed"]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1")
    outs = {}
    logs = {}
    for backend, extra in (("vllm", ["--max_model_len", "2048", "--window", "2"]), ("hf", [])):
        out = tmp_path / backend
        proc = subprocess.run([sys.executable, str(SCRIPT), "--backend", backend, "--output_dir", str(out),
                               *common, *extra], env=env, capture_output=True, text=True, timeout=580)
        assert proc.returncode == 0, proc.stderr[-4000:]
        outs[backend] = out
        logs[backend] = proc.stderr
    peak = re.search(r"rank 0/1 vllm: 12 rows, \d+ output tokens .*window 2, at most (\d+) requests in flight; "
                     r"multimodal processor cache (\w+)", logs["vllm"])
    assert peak and int(peak.group(1)) == 2, logs["vllm"][-2000:]
    assert peak.group(2) == "off"  # read from the engine: a one-pass run keeps no processed images
    vllm_records = read_records(outs["vllm"] / "eval_results.jsonl")
    hf_records = read_records(outs["hf"] / "eval_results.jsonl")
    assert len(vllm_records) == 12
    assert [_strip_text(r) for r in vllm_records] == [_strip_text(r) for r in hf_records]
    # multi-image rows reached the engine with both images
    assert max(r["image_tokens"] for r in vllm_records) == 2 * min(r["image_tokens"] for r in vllm_records)
    for record in vllm_records:
        assert record["num_rollouts"] == 1
        for rollout in record["rollouts"]:
            graded = {k: v for k, v in rollout.items() if k not in ("output_tokens", "finish_reason")}
            assert graded == grade_rollout(rollout["output_text"], record, mode="strict")
            assert 1 <= rollout["output_tokens"] <= 4 and rollout["finish_reason"] in ("stop", "length")
            assert rollout["finish_reason"] == "stop" or rollout["output_tokens"] == 4
    acc = json.loads((outs["vllm"] / "accuracy.json").read_text())
    assert set(acc) == {"pmc_vqa", "MMMU-medical", "slake_closed", "_average"}
    assert all(acc[k]["rows"] == 4 for k in ("pmc_vqa", "MMMU-medical", "slake_closed"))
    args = json.loads((outs["vllm"] / "args.json").read_text())
    assert args["args"]["backend"] == "vllm" and args["sampling"]["temperature"] == 0.0


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_pass_rate_resume_samples_as_an_uninterrupted_run(tmp_path, tiny_model_dir, eval_dataset_dir):
    # The state a kill leaves (args.json and the first records) resumed with other rows beside each request in the
    # engine: with one seed per request the resumed records equal the uninterrupted run's.
    common = ["--model", str(tiny_model_dir), "--dataset_name", str(eval_dataset_dir), "--max_tokens", "6",
              "--max_pixels", str(64 * 28 * 28), "--subset", "pmc_vqa,slake_closed,vqa_rad_closed",
              "--temperature", "1.0", "--n", "4", "--max_model_len", "2048", "--window", "3"]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output_dir", str(whole), *common], env=env,
                          capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed.mkdir()
    (resumed / "args.json").write_bytes((whole / "args.json").read_bytes())
    shard = (whole / "shard-000-of-001.jsonl").read_text().splitlines(keepends=True)
    (resumed / "shard-000-of-001.jsonl").write_text("".join(shard[:5]))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output_dir", str(resumed), *common], env=env,
                          capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = read_records(resumed / "eval_results.jsonl")
    assert len(records) == 12 and len({r["rollouts"][0]["output_text"] for r in records}) > 1
    assert records == read_records(whole / "eval_results.jsonl")
