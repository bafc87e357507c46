"""The opt-in response-only log-probabilities (medvlthinker.compat.verl_response_logits) give verl the numbers its
own paths give, at the positions verl reads, with the same gradients."""

from __future__ import annotations

import pytest
import torch

from medvlthinker.compat import verl_response_logits as rl

pytest.importorskip("verl")


def small_model(vocab: int = 512):
    import transformers
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from medvlthinker.demo.tiny import architecture_config

    config = architecture_config("tiny")
    config.update(vocab_size=vocab, bos_token_id=0, eos_token_id=0)  # inside the small vocabulary
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config)).to(torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
    with torch.no_grad():  # a peaked next-token distribution, so that a wrong position or row shows
        model.lm_head.weight.mul_(40.0)
    return model


def packed(prompt_lens, response_lens, vocab):
    """One packed row of sequences (prompt then response each), verl's inputs for it, and the response positions."""
    torch.manual_seed(1)
    lengths = [p + r for p, r in zip(prompt_lens, response_lens)]
    input_ids = torch.randint(1, vocab, (1, sum(lengths)))
    text = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    position_ids = text.unsqueeze(0).expand(4, 1, -1).clone()  # text positions and the three rope rows
    positions = rl.response_positions(torch.tensor(prompt_lens), torch.tensor(response_lens))
    return input_ids, position_ids, positions


def test_positions_are_the_ones_verl_slices_the_response_from():
    from tensordict import TensorDict
    from verl.workers.utils.padding import no_padding_2_padding

    prompt_lens, response_lens = [5, 3, 7], [4, 6, 1]
    width_p, width_r = max(prompt_lens), max(response_lens)
    mask = torch.zeros(3, width_p + width_r, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        mask[i, :p] = 1  # the lengths are what verl reads from the mask
        mask[i, width_p:width_p + r] = 1
    data = TensorDict({"prompts": torch.zeros(3, width_p, dtype=torch.long),
                       "responses": torch.zeros(3, width_r, dtype=torch.long), "attention_mask": mask},
                      batch_size=[3])
    total = sum(prompt_lens) + sum(response_lens)
    sliced = no_padding_2_padding(torch.arange(total) + 1, data)  # each value is its position + 1; padding is 0
    expected = torch.cat([row[row > 0] - 1 for row in sliced])
    assert torch.equal(rl.response_positions(torch.tensor(prompt_lens), torch.tensor(response_lens)), expected)
    assert rl._lengths(data) is not None and [t.tolist() for t in rl._lengths(data)] == [prompt_lens, response_lens]


@pytest.mark.parametrize("with_entropy", [True, False])
def test_values_and_gradients_match_verls_own_paths(with_entropy):
    from verl.models.transformers import qwen2_vl
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    vocab, temperature = 512, 0.7
    model = small_model(vocab)
    input_ids, position_ids, positions = packed([6, 4], [5, 3], vocab)
    labels = torch.roll(input_ids, shifts=-1, dims=-1)
    weights = torch.randn(positions.numel())  # a loss that weighs each response token differently

    def run(forward, **extra):
        model.zero_grad(set_to_none=True)
        out = forward(model, input_ids=input_ids, position_ids=position_ids, temperature=temperature,
                      shift_labels=labels, **extra)
        log_probs, entropy = out.log_probs[0, positions], out.entropy
        loss = (weights * log_probs).sum() + (entropy[0, positions].sum() if with_entropy else 0.0)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return log_probs.detach(), (entropy[0, positions].detach() if entropy is not None else None), out, grads

    # verl's fused torch path (every position) and ours (the response's only)
    fused_lp, fused_ent, _, fused_grads = run(qwen2_vl.forward_with_torch_backend)
    ours = rl._forward(qwen2_vl.forward_with_torch_backend)
    lp, ent, out, grads = run(ours, **{rl.POSITIONS: positions, rl.ENTROPY: with_entropy})
    torch.testing.assert_close(lp, fused_lp, rtol=1e-5, atol=1e-5)
    assert (ent is None) == (not with_entropy)
    if with_entropy:
        torch.testing.assert_close(ent, fused_ent, rtol=1e-5, atol=1e-5)
    else:
        assert out.entropy is None
    outside = torch.ones(input_ids.shape[1], dtype=torch.bool)
    outside[positions] = False
    assert torch.all(out.log_probs[0, outside] == 0)  # nothing verl reads
    assert fused_grads.keys() == grads.keys()
    for name in fused_grads:
        torch.testing.assert_close(grads[name], fused_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    # verl's default path (full logits, then log-softmax), the paper configs' one
    with torch.no_grad():
        hidden = qwen2_vl.qwen2_vl_forward(model, input_ids, position_ids=position_ids)[0]
        logits = model.lm_head(hidden[0]) / temperature
        torch.testing.assert_close(lp, logprobs_from_logits(logits, labels[0])[positions], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropy_from_logits(logits)[positions], fused_ent, rtol=1e-5, atol=1e-5)

    # without positions the wrapped forward is verl's
    plain = ours(model, input_ids=input_ids, position_ids=position_ids, temperature=temperature, shift_labels=labels)
    assert plain.log_probs.shape == input_ids.shape and torch.all(plain.log_probs[0, outside] != 0)


def test_install_swaps_both_pieces_and_uninstall_restores_them(monkeypatch):
    from verl.models.transformers import qwen2_vl
    from verl.workers.engine.fsdp import transformer_impl

    engine = transformer_impl.FSDPEngineWithLMHead
    before = (engine.prepare_model_inputs, qwen2_vl.forward_with_torch_backend)
    monkeypatch.delenv(rl.ENV, raising=False)
    assert rl.install_if_requested() is False
    assert (engine.prepare_model_inputs, qwen2_vl.forward_with_torch_backend) == before
    monkeypatch.setenv(rl.ENV, "1")
    try:
        assert rl.install_if_requested() is True
        assert engine.prepare_model_inputs is not before[0] and qwen2_vl.forward_with_torch_backend is not before[1]
        assert engine.prepare_model_inputs.__wrapped__ is before[0]
    finally:
        rl.uninstall()
    assert (engine.prepare_model_inputs, qwen2_vl.forward_with_torch_backend) == before


class _Engine:
    """What the wrapper reads of verl's FSDP engine: the model config's fused-kernel options and the SP switch."""

    def __init__(self, backend="torch", ulysses=False):
        self.model_config = type("ModelConfig", (), {"fused_kernel_options": {"impl_backend": backend}})()
        self.use_ulysses_sp = ulysses


@pytest.mark.parametrize("engine,fused,expected", [
    (_Engine(), True, True),
    (_Engine(backend="triton"), True, False),  # a forward this module does not patch would get unknown arguments
    (_Engine(ulysses=True), True, False),  # each rank holds a slice of the packed row
    (_Engine(), False, False),  # verl's default head reads full logits
])
def test_prepare_model_inputs_passes_positions_only_to_the_forward_it_patches(engine, fused, expected):
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    def nested(rows):
        return torch.nested.nested_tensor([torch.tensor(r) for r in rows], layout=torch.jagged)

    prompts, responses = [[1, 2, 3], [4, 5]], [[7], [8, 9, 10]]
    batch = TensorDict({"prompts": nested(prompts), "responses": nested(responses),
                        "input_ids": nested([p + r for p, r in zip(prompts, responses)])}, batch_size=[2])
    tu.assign_non_tensor(batch, use_fused_kernels=fused, use_remove_padding=True, calculate_entropy=True)
    prepare = rl._prepare_model_inputs(lambda self, micro_batch: ({"input_ids": "as verl made them"}, {}))
    inputs, _ = prepare(engine, batch)
    assert inputs["input_ids"] == "as verl made them"
    if expected:
        # sequence 1 ends at 4 (response at 3), sequence 2 at 9 (responses at 6, 7, 8): predicted one earlier
        assert inputs[rl.POSITIONS].tolist() == [2, 5, 6, 7] and inputs[rl.ENTROPY] is True
    else:
        assert rl.POSITIONS not in inputs and rl.ENTROPY not in inputs
