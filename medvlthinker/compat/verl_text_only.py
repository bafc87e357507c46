"""Let verl's actor compute a Qwen2.5-VL forward on a batch without pictures under transformers 5.

Symptom (GRPO on text-only rows, i.e. every m23k arm; verl 0.9.1, transformers 5.x, any device): rollouts and the
reward run, then the first ``compute_log_prob`` of the actor dies::

    verl/models/transformers/qwen2_vl.py, in _get_input_embeds
        inputs_embeds = inputs_embeds + 0.0 * image_embeds.mean()
    AttributeError: 'BaseModelOutputWithPooling' object has no attribute 'mean'

Cause: on a micro-batch with no picture, verl still runs the vision tower on a dummy 4x4 patch grid and adds
``0.0 * mean`` of its output to the embeddings, so that every FSDP rank takes part in the vision tower's
collectives and its parameters get a (zero) gradient. Since transformers 5 the vision tower returns a
``BaseModelOutputWithPooling`` instead of a tensor; verl unpacks it (``unpack_visual_output``) on the picture branch
but not on this one.

Fix: wrap ``_get_input_embeds`` so that, on a call without pictures or videos, a forward hook on ``model.visual``
hands verl's dummy branch the tensor ``unpack_visual_output`` would have taken out (the merged patch embeddings),
for that call only. Calls with pictures are passed through untouched. Installed only when a behavioural probe (the
dummy branch on a 2 MB Qwen2.5-VL built from the tiny architecture) fails without it, so it steps aside once
verl is fixed, and installed in every Ray worker by :mod:`medvlthinker.compat.verl_fixes`. Set
``MEDVLTHINKER_VERL_TEXT_ONLY_FIX=0`` to disable it.
"""

from __future__ import annotations

import functools

from medvlthinker.compat.patch import Patch, env_is
from medvlthinker.compat.probed_fix import ProbedFix

ENV_DISABLE = "MEDVLTHINKER_VERL_TEXT_ONLY_FIX"
TARGET = "verl.models.transformers.qwen2_vl"
"""The module whose ``_get_input_embeds`` the fix wraps (verl's forward looks the name up there at call time)."""

_saved: dict = {"original": None}


# ---------------------------------------------------------------------------------------------------- the repair
def _visual_tensor(module, args, output):
    # forward hook on model.visual: the merged patch embeddings, whatever container the installed transformers uses
    from verl.utils.transformers_compat import unpack_visual_output

    return unpack_visual_output(output)[0]


def _fixed(original):
    @functools.wraps(original)
    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None,
                          image_grid_thw=None, video_grid_thw=None):
        args = (model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw, video_grid_thw)
        if pixel_values is not None or pixel_values_videos is not None:
            return original(*args)
        handle = model.visual.register_forward_hook(_visual_tensor)
        try:
            return original(*args)
        finally:
            handle.remove()

    _get_input_embeds.__medvlthinker_original__ = original
    return _get_input_embeds


# ------------------------------------------------------------------------------------------------------ the probe
def probe_model():
    """A Qwen2.5-VL inner model (``Qwen2_5_VLModel``, what verl's patched forward receives) with the tiny
    architecture and a 64-token vocabulary: 0.56 M parameters, built in well under a second."""
    import torch
    import transformers
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    from medvlthinker.demo.tiny import architecture_config

    config = architecture_config("tiny")
    for key in ("bos_token_id", "eos_token_id"):
        config[key] = 0  # inside the small vocabulary, so transformers does not warn
    config["vocab_size"] = 64
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        torch.manual_seed(0)
        return Qwen2_5_VLModel(Qwen2_5_VLConfig(**config)).to(torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)


def check_text_only_forward(model=None) -> None:
    """verl's ``_get_input_embeds`` on a batch without pictures, as installed now: raise unless it returns the text
    embeddings unchanged and the vision tower's parameters get a gradient (what the dummy branch is for)."""
    import importlib

    import torch

    module = importlib.import_module(TARGET)
    model = model if model is not None else probe_model()
    input_ids = torch.tensor([[1, 2, 3, 4]])
    model.zero_grad(set_to_none=True)
    embeds, _ = module._get_input_embeds(model, input_ids)
    expected = model.get_input_embeddings()(input_ids)
    if tuple(embeds.shape) != tuple(expected.shape) or not torch.equal(embeds.detach(), expected.detach()):
        raise AssertionError(f"embeddings {tuple(embeds.shape)} differ from the text embeddings {tuple(expected.shape)}")
    embeds.sum().backward()
    missing = [name for name, p in model.visual.named_parameters() if p.grad is None]
    if missing:
        raise AssertionError(f"{len(missing)} vision-tower parameters get no gradient (first: {missing[0]})")


def probe() -> list[str]:
    """The failure of verl's text-only forward as installed now (an empty list when it works)."""
    try:
        check_text_only_forward()
    except Exception as exc:  # any failure means verl's actor cannot run a batch without pictures
        return [f"text-only _get_input_embeds: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"]
    return []


# ------------------------------------------------------------------------------------------- install / uninstall
def _apply() -> None:
    import importlib

    module = importlib.import_module(TARGET)
    _saved["original"] = module._get_input_embeds
    module._get_input_embeds = _fixed(module._get_input_embeds)


def _remove() -> None:
    import importlib

    importlib.import_module(TARGET)._get_input_embeds = _saved["original"]
    _saved["original"] = None


FIX = ProbedFix("verl_text_only", "verl text-only forward fix", ENV_DISABLE, probe, _apply, _remove)
needed, is_active, install, uninstall, status = FIX.needed, FIX.is_active, FIX.install, FIX.uninstall, FIX.status

PATCH = Patch(
    name="verl_text_only", target="verl.models.transformers.qwen2_vl._get_input_embeds",
    upstream="verl 0.9.1 verl/models/transformers/qwen2_vl.py:394 (0.0 * image_embeds.mean()), transformers >= 5",
    symptom="the actor's first compute_log_prob on a batch without pictures raises AttributeError "
            "'BaseModelOutputWithPooling' object has no attribute 'mean'",
    library="verl", probe=needed, install=install, uninstall=uninstall, is_active=is_active,
    where="the driver of every RL run and every Ray worker (worker_process_setup_hook), any machine",
    switch=f"{ENV_DISABLE}=0", switched=env_is(ENV_DISABLE, "0"),
)
