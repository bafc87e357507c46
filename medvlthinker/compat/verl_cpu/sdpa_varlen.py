"""Remove-padding attention for Qwen2.5-VL without flash-attn (the CPU profile).

With ``use_remove_padding: true`` (the paper's setting) verl packs a micro-batch into one row and replaces the text
attention of Qwen2(.5)-VL by ``verl/models/transformers/qwen2_vl.py`` ``qwen2_vl_attn_forward``, which calls the
module's ``_custom_flash_attention_forward`` -> ``flash_attn_varlen_func``; the module defines those names only when
flash-attn is importable, so without it the first forward raises NameError ``_flash_use_top_left_mask``. flash-attn
does not exist for a CPU. Here the same packed attention is computed with PyTorch's scaled-dot-product attention: a
token attends causally to the tokens of its own sequence, sequences being delimited where the text position ids
restart at 0 (the rule of verl's ``prepare_fa2_from_position_ids``). verl's patched forward, the packing and the
3-D position ids all stay in the path, so the test covers the cluster's code. On a GPU without flash-attn the RL
preflight stops instead and names the fix (install flash-attn, or ``use_remove_padding=false``).
"""

from __future__ import annotations

from medvlthinker.compat.patch import Patch
from medvlthinker.compat.verl_cpu._hooks import WHERE, disabled_by, install_after_import

TARGET = "verl.models.transformers.qwen2_vl"
_state: dict = {"originals": None}


def packed_attention(query_states, key_states, value_states, attention_mask, query_length, is_causal=True,
                     position_ids=None, sliding_window=None, use_top_left_mask=False, deterministic=None, **kwargs):
    """``_custom_flash_attention_forward``'s contract: ``(batch, seq, heads, head_dim)`` in and out."""
    import torch
    import torch.nn.functional as F

    q, k, v = (t.transpose(1, 2) for t in (query_states, key_states, value_states))  # (batch, heads, seq, dim)
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    seq = q.shape[2]
    causal = is_causal and query_length != 1
    allowed = None
    if position_ids is not None and query_length != 1:
        # sequence number of each token: a new sequence starts wherever the text position id is 0
        starts = position_ids.reshape(q.shape[0], seq) == 0
        starts[:, 0] = True
        segment = starts.long().cumsum(-1)
        allowed = segment[:, :, None] == segment[:, None, :]
    if attention_mask is not None and attention_mask.dim() == 2:
        keys = attention_mask[:, None, :].bool()
        allowed = keys if allowed is None else allowed & keys
    if allowed is not None:
        if causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
        allowed = allowed | torch.eye(seq, dtype=torch.bool, device=q.device)  # no query row without a key
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=kwargs.get("dropout", 0.0),
                                             scale=kwargs.get("softmax_scale"))
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=kwargs.get("dropout", 0.0),
                                             scale=kwargs.get("softmax_scale"))
    return out.transpose(1, 2)


def flash_attn_missing(module) -> bool:
    """Whether verl's patched Qwen2-VL attention in ``module`` lacks the flash-attn names it calls."""
    return getattr(module, "flash_attn_varlen_func", None) is None or not hasattr(module, "_flash_use_top_left_mask")


def _patch(module) -> None:
    from medvlthinker.compat.verl_cpu import cpu_profile, log

    if _state["originals"] is not None or not cpu_profile() or not flash_attn_missing(module):
        return
    _state["originals"] = {name: module.__dict__.get(name, _MISSING)
                           for name in ("_custom_flash_attention_forward", "_flash_use_top_left_mask")}
    module._custom_flash_attention_forward = packed_attention
    module._flash_use_top_left_mask = False
    log("installed sdpa_varlen: verl's remove-padding Qwen2-VL attention runs on PyTorch SDPA")


_MISSING = object()


def needed() -> bool:
    import importlib

    from medvlthinker.compat.verl_cpu import cpu_profile

    if not cpu_profile():
        return False
    if _state["originals"] is not None:
        return _state["originals"]["_flash_use_top_left_mask"] is _MISSING
    return flash_attn_missing(importlib.import_module(TARGET))


def probe() -> bool:
    """verl's patched attention lacks the flash-attn names (:func:`needed` without the CPU-profile condition)."""
    import importlib

    if _state["originals"] is not None:
        return _state["originals"]["_flash_use_top_left_mask"] is _MISSING
    return flash_attn_missing(importlib.import_module(TARGET))


def is_active() -> bool:
    return _state["originals"] is not None


def install() -> bool:
    return install_after_import(TARGET, _patch, is_active)


def uninstall() -> None:
    import sys

    if _state["originals"] is None:
        return
    module = sys.modules[TARGET]
    for name, value in _state["originals"].items():
        if value is _MISSING:
            module.__dict__.pop(name, None)
        else:
            setattr(module, name, value)
    _state["originals"] = None

PATCH = Patch(
    name="sdpa_varlen",
    target="verl.models.transformers.qwen2_vl._custom_flash_attention_forward, ._flash_use_top_left_mask",
    upstream="verl 0.9.1 verl/models/transformers/qwen2_vl.py:268 qwen2_vl_attn_forward (flash-attn only)",
    symptom="with use_remove_padding and no flash-attn the actor's first forward raises NameError "
            "_flash_use_top_left_mask",
    library="verl", probe=probe, install=install, uninstall=uninstall, is_active=is_active, where=WHERE,
    switch="MEDVLTHINKER_VERL_CPU_DISABLE=sdpa_varlen", switched=disabled_by("sdpa_varlen"),
)
