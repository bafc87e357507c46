"""RL preflight, the checks of what a config says (steps 1, 2 and 5 of :mod:`medvlthinker.train.preflight`): Hydra
composes it on verl's ``ppo_trainer``, every key is one verl knows (:mod:`medvlthinker.train.config_schema`),
verl's ``validate_config`` accepts it, the reward sits under ``reward.custom_reward_function`` and scores
well-formed, malformed and wrong completions as it should. Also the error and the report every check uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.errors import UserError


class PreflightError(UserError, RuntimeError):
    """A problem that would stop or silently spoil the RL run; the message says where and what to do."""


@dataclass
class PreflightReport:
    config: str
    lines: list[str] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    over_limit: int = 0
    fixes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewards: dict[str, list[float]] = field(default_factory=dict)

    def ok(self, what: str) -> None:
        self.lines.append(f"ok    {what}")

    def note(self, what: str) -> None:
        self.lines.append(f"note  {what}")

    def text(self) -> str:
        return "\n".join([f"preflight {self.config}", *self.lines])


# --------------------------------------------------------------------------------------------------- 1. config
def runtime_env_vars(cfg) -> dict[str, str]:
    """``ray_kwargs.ray_init.runtime_env.env_vars`` of a composed config, as strings."""
    env = (((cfg.get("ray_kwargs") or {}).get("ray_init") or {}).get("runtime_env") or {}).get("env_vars") or {}
    return {str(k): str(v) for k, v in env.items()}


def compose_config(config: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()):
    """Compose ``config`` (a YAML path under configs/rl) with Hydra overrides, as ``main_ppo`` would."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    path = Path(config).resolve()
    if not path.is_file():
        raise PreflightError(f"config file {config} not found; fix: pass a file such as configs/rl/<row>.yaml")
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base=None):
            cfg = compose(config_name=path.stem, overrides=list(overrides))
    except yaml.YAMLError as exc:
        raise PreflightError(f"{config}: a config file is not valid YAML ({' '.join(str(exc).split())}); fix: correct "
                             "the line named above") from exc
    except (HydraException, OmegaConfBaseException) as exc:
        raise PreflightError(
            f"{config}: Hydra cannot compose it with overrides {list(overrides)}: {exc}; fix: correct the key named "
            f"above (verl's keys: verl/trainer/config/_generated_ppo_trainer.yaml; a new key needs a leading +)"
        ) from exc
    missing = [key for key in ("data", "actor_rollout_ref", "reward", "trainer") if key not in cfg]
    if missing:
        raise PreflightError(f"{config}: composes to no GRPO config (no {', '.join(missing)} section), so it does not "
                             "extend verl's trainer; fix: start it with 'defaults: [base/grpo, _self_]' and the hydra "
                             "searchpath of configs/rl/*.yaml, in the folder configs/rl")
    return cfg


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


def check_run_layout(cfg, report: PreflightReport, *, cpu: bool) -> None:
    """The checkpoint folder can be written (verl writes it only after the first save interval), and the CPU
    profile (``configs/rl/overlays/cpu.yaml``, one machine) is not asked for several nodes."""
    import tempfile

    nodes = int(cfg.trainer.nnodes)
    if cpu and nodes > 1:
        raise PreflightError(
            f"configs/rl/overlays/cpu.yaml runs verl on this one machine, but trainer.nnodes={nodes} (the paper "
            f"config's): Ray would wait for {nodes} nodes that never join; fix: add the override trainer.nnodes=1"
        )
    folder = Path(os.path.expanduser(str(cfg.trainer.default_local_dir)))
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    key = f"trainer.default_local_dir={cfg.trainer.default_local_dir}"
    if not existing.is_dir():
        raise PreflightError(f"{key}: {existing} is a file, so the checkpoint folder cannot be created; fix: point "
                             "trainer.default_local_dir at a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PreflightError(f"{key}: {existing} is not writable ({exc.strerror}), so the first checkpoint save would "
                             "fail after hours of training; fix: point trainer.default_local_dir at a writable "
                             "folder") from None
    report.ok(f"checkpoints go to {folder} (writable)")


ONLINE_FILTER_OVERLAY = "configs/rl/overlays/online_filter.yaml"


def check_online_filter(cfg, report: PreflightReport) -> None:
    """``algorithm.filter_groups`` (:data:`ONLINE_FILTER_OVERLAY`) only where verl 0.9.1 applies it: the v1 trainer's
    built-in replay buffer, groups of at least two rollouts, GRPO's group advantages, and a reward known when the
    group finishes (rule-based, or a reward model in its own resource pool)."""
    filter_groups = cfg.algorithm.get("filter_groups") or {}
    if not filter_groups.get("enable", False):
        return
    where = f"algorithm.filter_groups.enable=true ({ONLINE_FILTER_OVERLAY})"
    problems = []
    if not filter_groups.get("metric"):
        problems.append(("algorithm.filter_groups.metric is empty", "algorithm.filter_groups.metric=reward"))
    if not cfg.trainer.get("use_v1", False):
        problems.append(("trainer.use_v1 is false (the legacy trainer ignores filter_groups)", "trainer.use_v1=true"))
    sampler = cfg.trainer.get("v1", {}).get("sampler", {}).get("custom_sampler") or {}
    if sampler.get("path"):
        problems.append((f"trainer.v1.sampler.custom_sampler.path={sampler.get('path')!r} replaces the replay buffer "
                         "that filters", "drop the custom sampler"))
    if cfg.algorithm.adv_estimator != "grpo":
        problems.append((f"algorithm.adv_estimator={cfg.algorithm.adv_estimator!r} is not GRPO's group advantage",
                         "algorithm.adv_estimator=grpo"))
    if cfg.actor_rollout_ref.rollout.n < 2:
        problems.append((f"actor_rollout_ref.rollout.n={cfg.actor_rollout_ref.rollout.n} leaves no group to compare",
                         "actor_rollout_ref.rollout.n=8 (the paper's)"))
    reward_model = cfg.reward.get("reward_model") or {}
    if reward_model.get("enable", False) and not reward_model.get("enable_resource_pool", False):
        problems.append(("a colocated reward model scores only after sampling",
                         "reward.reward_model.enable_resource_pool=true"))
    if problems:
        what, fix = problems[0]
        raise PreflightError(f"{where} cannot apply to this config: {what}; fix: {fix}, or drop the overlay")
    report.ok(f"online filtering: groups with equal {filter_groups.get('metric')} are dropped and replaced")


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
