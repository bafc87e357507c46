"""eval/eval_baselines.sh: every command it would run is accepted by the real command-line parser and gives the
settings of the original's baseline script (no model is loaded: ``python`` on PATH records its arguments)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from medvlthinker.inference.run_config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


def _commands(tmp_path, **env):
    shim = tmp_path / "bin"
    shim.mkdir()
    log = tmp_path / "calls.txt"
    (shim / "python").write_text(f"#!/usr/bin/env bash\nprintf '%q ' \"$@\" >> {log}\necho >> {log}\n")
    (shim / "python").chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "eval" / "eval_baselines.sh"), str(tmp_path / "out")],
                          env=dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", **env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in log.read_text().splitlines()]


def _parse(argv) -> RunConfig:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("run_offline_inference", ROOT / "eval" / "run_offline_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ctx = module.main.make_context("run_offline_inference.py", list(argv))
    params = dict(ctx.params)
    params.pop("debug", None)  # the one-line-error wrapper's own flag
    subset, engine_kwargs = params.pop("subset"), params.pop("engine_kwargs")
    return RunConfig(subset=list(subset) or None, engine_kwargs=json.loads(engine_kwargs), **params)


def test_every_command_parses_with_the_original_settings(tmp_path):
    calls = _commands(tmp_path, REPEATS="2")
    runs = [c[1:] for c in calls if c[0].endswith("run_offline_inference.py")]
    regrades = [c[1:] for c in calls if c[0].endswith("regrade.py")]
    assert len(runs) == len(regrades) == 2 * 1 + 7 * 2  # API models once, the others REPEATS times
    configs = {}
    for argv in runs:
        config = _parse(argv)
        assert (config.temperature, config.top_p, config.max_tokens, config.n, config.seed) == (0.0, 1.0, 4096, 1, 42)
        configs.setdefault(config.model, config)
    assert configs["gpt-4o-2024-11-20"].backend == configs["gpt-4o-mini-2024-07-18"].backend == "api"
    llava = configs["Eren-Senoglu/llava-med-v1.5-mistral-7b-hf"]
    assert (llava.prompt_mode, llava.instruction_prompt, llava.llava_med_rule, llava.dp_size) == (
        "raw_image_tokens", "step_by_step", True, 8)
    huatuo34 = configs["FreedomIntelligence/HuatuoGPT-Vision-34B-hf"]
    assert (huatuo34.prompt_mode, huatuo34.instruction_prompt, huatuo34.dp_size, huatuo34.tp_size) == (
        "raw_image_tokens", "step_by_step", 2, 4)
    assert configs["FreedomIntelligence/HuatuoGPT-Vision-7B-Qwen2.5VL"].instruction_prompt == "step_by_step"
    for name, (dp, tp) in {"google/gemma-3-4b-it": (8, 1), "google/medgemma-4b-it": (8, 1),
                           "google/gemma-3-27b-it": (2, 4), "google/medgemma-27b-it": (2, 4)}.items():
        assert (configs[name].prompt_mode, configs[name].dp_size, configs[name].tp_size) == ("gemma3", dp, tp)
    # the regrade follows each run, with the llava-med rule for LLaVA-Med only
    assert [r for r in regrades if "--llava_med_rule" in r] == [r for r in regrades if "llava-med" in r[0]]
    assert len([r for r in regrades if "llava-med" in r[0]]) == 2


def test_a_model_without_settings_is_refused(tmp_path):
    shim_env = {"MODELS": "Qwen/Qwen2.5-VL-3B-Instruct"}
    proc = subprocess.run(["bash", str(ROOT / "eval" / "eval_baselines.sh"), str(tmp_path / "out")],
                          env=dict(os.environ, **shim_env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "no settings for Qwen/Qwen2.5-VL-3B-Instruct; fix: use eval/eval_commands.sh" in proc.stderr
