"""The RL configs carry the paper's settings (docs/protocol.md section 8), the reward key verl 0.9 reads, and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlthinker.compat import verl_fixes
from medvlthinker.train.preflight_config import compose_config

ROOT = Path(__file__).resolve().parent.parent
RL = ROOT / "configs" / "rl"


@pytest.fixture(scope="module")
def configs():
    return {path.stem: compose_config(path) for path in sorted(RL.glob("*.yaml"))}


def test_shared_grpo_recipe(configs):
    for name, c in configs.items():
        actor, rollout = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
        assert c.algorithm.adv_estimator == "grpo" and c.algorithm.use_kl_in_reward is False, name
        assert (c.data.max_prompt_length, c.data.max_response_length) == (2048, 4096), name
        assert c.data.filter_overlong_prompts is False and c.data.truncation == "error", name
        assert c.data.image_key == "images" and c.data.prompt_key == "prompt", name
        assert actor.optim.lr == 1e-6 and actor.optim.lr_scheduler_type == "constant", name
        assert actor.optim.lr_warmup_steps_ratio == 0.0, name
        assert actor.use_kl_loss and actor.kl_loss_coef == 0.01 and actor.kl_loss_type == "low_var_kl", name
        assert actor.entropy_coeff == 0 and actor.clip_ratio == 0.2 and actor.grad_clip == 1.0, name
        assert actor.loss_agg_mode == "token-mean", name
        assert rollout.name == "vllm" and rollout.n == 8 and rollout.temperature == 1.0, name
        assert rollout.gpu_memory_utilization == 0.6, name
        assert rollout.val_kwargs.do_sample is False and rollout.val_kwargs.temperature == 0, name
        assert c.actor_rollout_ref.ref.fsdp_config.param_offload is True, name
        assert c.actor_rollout_ref.model.use_remove_padding and c.actor_rollout_ref.model.enable_gradient_checkpointing
        # verl 0.9 reads the reward here only; the legacy top-level key stays empty
        assert c.reward.custom_reward_function.path == "pkg://medvlthinker.reward", name
        assert c.reward.custom_reward_function.name == "compute_score", name
        assert c.custom_reward_function.path is None, name
        assert c.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == verl_fixes.HOOK, name
        assert c.trainer.experiment_name == name


@pytest.mark.parametrize(
    "name, batch, mini, micro, tp, epochs, shuffle, freq, nodes",
    [
        ("qwen2.5-vl-3b_rl_m23k", 256, 128, 32, 2, 5, True, 50, 1),
        ("qwen2.5-vl-7b_rl_pmc", 256, 128, 32, 2, 1, True, 50, 1),
        ("qwen2.5-vl-3b_rl_m23k_easy_to_hard", 256, 128, 32, 2, 5, False, 100, 1),
        ("qwen2.5-vl-7b_rl_pmc_easy_to_hard", 256, 128, 32, 2, 1, False, 100, 1),
        ("qwen2.5-vl-3b_rl_pmc_easy_to_hard", 256, 128, 16, 2, 1, False, 100, 1),
        ("qwen2.5-vl-3b_rl_m23k_easy_to_hard_1_epoch", 256, 128, 32, 2, 1, False, 50, 1),
        ("qwen2.5-vl-7b_rl_m23k_easy_to_hard_1_epoch", 256, 128, 32, 2, 1, False, 50, 1),
        ("qwen2.5-vl-3b_rl_m23k_then_rl_pmc", 64, 32, 8, 2, 1, True, 50, 1),
        ("qwen2.5-vl-3b_sft_m23k_then_rl_pmc", 64, 32, 8, 2, 1, True, 50, 1),
        ("qwen2.5-vl-7b_sft_m23k_then_rl_pmc", 64, 32, 4, 2, 1, True, 50, 1),
        ("qwen2.5-vl-32b_rl_m23k", 128, 64, 16, 4, 5, True, 50, 4),
    ],
)
def test_paper_row_settings(configs, name, batch, mini, micro, tp, epochs, shuffle, freq, nodes):
    c = configs[name]
    actor = c.actor_rollout_ref.actor
    assert c.data.train_batch_size == batch
    assert (actor.ppo_mini_batch_size, actor.ppo_micro_batch_size_per_gpu) == (mini, micro)
    assert c.actor_rollout_ref.rollout.tensor_model_parallel_size == tp
    assert c.trainer.total_epochs == epochs and c.data.shuffle is shuffle
    assert c.trainer.save_freq == freq and c.trainer.test_freq == freq
    assert (c.trainer.nnodes, c.trainer.n_gpus_per_node) == (nodes, 8)
    for ref in (c.actor_rollout_ref.rollout, c.actor_rollout_ref.ref):
        assert ref.log_prob_micro_batch_size_per_gpu == micro  # the original sets all three micro-batches alike


def test_checkpoint_retention_and_first_validation_follow_the_original_scripts(configs):
    for name, c in configs.items():
        keep = 2 if name in ("qwen2.5-vl-32b_rl_m23k", "qwen2.5-vl-3b_rl_pmc_easy_to_hard") else None
        assert (c.trainer.max_actor_ckpt_to_keep, c.trainer.max_critic_ckpt_to_keep) == (keep, keep), name
        assert c.trainer.val_before_train is (name != "qwen2.5-vl-32b_rl_m23k"), name


def test_rows_read_the_right_data_and_model(configs):
    for name, c in configs.items():
        data = "m23k" if "_rl_m23k" in name and "_then_" not in name else "pmc_vqa"
        order = "unfiltered" if name.endswith("_unfiltered") else "easy_to_hard"  # the ablation without the band
        assert all(f"/{data}-{order}/" in f for f in c.data.train_files), name
        path = c.actor_rollout_ref.model.path
        if "_then_" in name:
            assert path.startswith("checkpoints/"), name  # the converted first-stage checkpoint
        else:
            size = name.split("_")[0].split("-")[-1].upper()
            assert path == f"Qwen/Qwen2.5-VL-{size}-Instruct", name


@pytest.mark.slow
def test_ray_workers_get_the_fixes_from_the_config(configs):
    """A Ray worker started with the config's runtime_env has verl's fixes installed before it runs a task."""
    import ray
    from omegaconf import OmegaConf

    runtime_env = OmegaConf.to_container(configs["qwen2.5-vl-3b_rl_m23k"].ray_kwargs.ray_init.runtime_env)
    runtime_env = {k: v for k, v in runtime_env.items() if v is not None}

    @ray.remote(num_cpus=0)
    def worker_state():
        from verl.models.transformers import qwen2_vl
        from verl.utils import tensordict_utils as tu

        from medvlthinker.compat import verl_position_ids, verl_text_only

        verl_position_ids.check_index_select([135] * 4, [0, 1], apply_verl_fix_first=True)  # raises without the fix
        verl_text_only.check_text_only_forward()  # raises without its fix
        return (verl_position_ids.is_active(), hasattr(tu.index_select_tensor_dict, "__medvlthinker_original__"),
                verl_text_only.is_active(), hasattr(qwen2_vl._get_input_embeds, "__medvlthinker_original__"))

    ray.init(num_cpus=1, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    try:
        assert ray.get(worker_state.remote(), timeout=240) == (True, True, True, True)
    finally:
        ray.shutdown()


def test_the_cpu_profile_trains_in_float32():
    # verl's FSDP engine defaults to bfloat16 parameters; on a CPU without bfloat16 matrix instructions those
    # matmuls run in ATen's reference GEMM, and a GRPO step of the demo took minutes instead of seconds
    cfg = compose_config(RL / "qwen2.5-vl-3b_rl_pmc.yaml", ["+overlays=[cpu]"])
    for role in ("actor", "ref"):
        precision = cfg.actor_rollout_ref[role].fsdp_config.mixed_precision
        assert dict(precision) == {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}, role
    assert cfg.actor_rollout_ref.rollout.dtype == "float32"
