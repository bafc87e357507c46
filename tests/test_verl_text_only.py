"""The verl text-only forward fix (medvlthinker/compat/verl_text_only.py): verl's actor fails on a micro-batch
without pictures under the pinned transformers, works with the fix, and is unchanged on batches with pictures."""

from __future__ import annotations

import pytest
import torch
from verl.models.transformers import qwen2_vl

from medvlthinker.compat import verl_fixes
from medvlthinker.compat import verl_text_only as fix

IMAGE_TOKEN = 7  # inside the probe model's 64-token vocabulary


@pytest.fixture
def unpatched():
    """verl exactly as installed; the fix is put back afterwards if it was active."""
    with fix.FIX.state(installed=False):
        yield


@pytest.fixture
def patched():
    with fix.FIX.state(installed=True):
        yield


@pytest.fixture(scope="module")
def model():
    m = fix.probe_model()
    m.config.image_token_id = IMAGE_TOKEN
    return m


def picture_batch(model):
    """One 4x4-patch picture (4 merged tokens) between text tokens, with its patches."""
    vision = model.config.vision_config
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    torch.manual_seed(1)
    pixels = torch.randn(16, patch_dim)
    input_ids = torch.tensor([[1, 2] + [IMAGE_TOKEN] * 4 + [3, 4]])
    return input_ids, pixels, torch.tensor([[1, 4, 4]])


def test_unpatched_verl_fails_on_a_batch_without_pictures(unpatched, model):
    # the exact error of the first compute_log_prob of an m23k GRPO run
    with pytest.raises(AttributeError, match="'BaseModelOutputWithPooling' object has no attribute 'mean'"):
        fix.check_text_only_forward(model)
    assert fix.needed()


def test_patched_text_only_forward_gives_text_embeddings_and_vision_gradients(patched, model):
    fix.check_text_only_forward(model)  # raises unless both hold
    grads = [p.grad for p in model.visual.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)  # zero, as verl intends


def test_the_hook_lives_for_one_call_only(patched, model):
    fix.check_text_only_forward(model)
    assert not model.visual._forward_hooks
    # outside the text-only branch the vision tower returns transformers' own output object
    _, pixels, grid = picture_batch(model)
    assert not isinstance(model.visual(pixels, grid_thw=grid), torch.Tensor)


def test_batches_with_pictures_are_untouched(model):
    input_ids, pixels, grid = picture_batch(model)
    with fix.FIX.state(installed=False):
        want, _ = qwen2_vl._get_input_embeds(model, input_ids, None, pixels, None, grid, None)
    with fix.FIX.state(installed=True):
        got, _ = qwen2_vl._get_input_embeds(model, input_ids, None, pixels, None, grid, None)
    assert torch.equal(got, want)
    # the four picture positions hold the vision tower's output, the rest the text embeddings
    text = model.get_input_embeddings()(input_ids)
    picture = (input_ids == IMAGE_TOKEN)[0]
    assert torch.equal(got[0, ~picture], text[0, ~picture]) and not torch.equal(got[0, picture], text[0, picture])


def test_install_steps_aside_when_disabled(monkeypatch, unpatched):
    monkeypatch.setenv(fix.ENV_DISABLE, "0")
    assert fix.install() is False and not fix.is_active()


def test_the_hook_installs_every_fix_verl_needs():
    for one in verl_fixes.FIXES:
        one.uninstall()
    verl_fixes.worker_setup()  # installs and leaves installed what verl needs, as in a Ray worker
    status = verl_fixes.status()
    assert set(status) == {"verl_position_ids", "verl_text_only"}
    for name, s in status.items():
        assert s["active"] == s["needed"], (name, s)
    assert status["verl_text_only"]["needed"]  # the pinned verl and transformers need it
    fix.check_text_only_forward()
