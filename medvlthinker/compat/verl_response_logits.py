"""Opt-in speed-up of verl's actor and reference on a tiny model: log-probabilities at the response tokens only.

verl's FSDP engine (0.9.1) computes the next-token distribution at every position of the packed micro-batch, prompt
included, and keeps only the response's positions afterwards (``verl.workers.utils.padding.no_padding_2_padding``).
With Qwen2.5-VL's 151,936-token vocabulary and the paper's prompt that is most of a GRPO step on a small model:
the demo's tiny model answers in about 24 tokens after an 86-token prompt, so 78% of the logits, log-softmaxes
and entropies it computes (the actor's ``compute_log_prob``, the reference's, and each update's forward and
backward) are thrown away. On a 3B model the same work is a few percent of a step, which is why the paper configs
leave this off.

With ``MEDVLTHINKER_RESPONSE_LOGITS=1`` in the workers' environment and verl's torch fused-kernel path selected
(``actor_rollout_ref.model.use_fused_kernels=true``, ``...fused_kernel_options.impl_backend=torch``), two pieces are
installed:

- ``FSDPEngineWithLMHead.prepare_model_inputs`` also hands the model the packed positions whose next token is a
  response token, found from the micro-batch's prompt and response lengths as verl finds them when it slices the
  response back out;
- Qwen2.5-VL's ``forward_with_torch_backend`` takes those positions, applies the LM head to their hidden states
  only and computes the log-probabilities and entropies there with verl's own functions
  (``logprobs_from_logits``, ``entropy_from_logits``), zeros elsewhere; the entropy only when verl asks for it.

Every number verl reads is the same as without it (``tests/test_verl_response_logits.py`` compares values and
gradients; a run's ``training/rollout_probs_diff_max``, the actor against vLLM, stays where it was, 1e-4 to 4e-4
on the demo). Without the variable, with verl's default (non-fused) path, another fused backend or Ulysses
sequence parallelism, nothing changes. The demo turns it on (scripts/demo.sh).
"""

from __future__ import annotations

import functools
import os

from medvlthinker.compat.patch import Patch

ENV = "MEDVLTHINKER_RESPONSE_LOGITS"
POSITIONS = "medvlthinker_response_positions"
ENTROPY = "medvlthinker_response_entropy"
"""The two keyword arguments ``prepare_model_inputs`` adds to the model's inputs."""

_saved: dict = {}
_said: set = set()


def requested() -> bool:
    return os.environ.get(ENV, "0").strip() == "1"


def response_positions(prompt_lens, response_lens):
    """Packed positions (a 1-D LongTensor) whose next token is a response token.

    Sequence i is its prompt then its response, packed one after the other; the model's output at position p
    predicts token p + 1, so the response of a sequence ending at offset ``end`` is predicted at
    ``end - response_len - 1 .. end - 2`` (the slice ``no_padding_2_padding`` takes).
    """
    import torch

    ends = (prompt_lens + response_lens).cumsum(0)
    spans = [torch.arange(int(end - n) - 1, int(end) - 1) for end, n in zip(ends.tolist(), response_lens.tolist())]
    return torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)


def _lengths(micro_batch):
    """(prompt lengths, response lengths) of the micro-batch, or None when it has no prompt/response split."""
    keys = set(micro_batch.keys())
    if not {"prompts", "responses"} <= keys:
        return None
    prompts, responses = micro_batch["prompts"], micro_batch["responses"]
    if prompts.is_nested:
        return prompts.offsets().diff(), responses.offsets().diff()
    if "attention_mask" not in keys or micro_batch["attention_mask"].is_nested:
        return None
    mask = micro_batch["attention_mask"]
    return mask[:, : prompts.shape[1]].sum(1), mask[:, prompts.shape[1]:].sum(1)


def _prepare_model_inputs(original):
    @functools.wraps(original)
    def prepare_model_inputs(self, micro_batch):
        from verl.utils import tensordict_utils as tu

        model_inputs, output_args = original(self, micro_batch)
        fused = tu.get_non_tensor_data(data=micro_batch, key="use_fused_kernels", default=False)
        packed = tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True)
        options = self.model_config.fused_kernel_options or {}
        ours = fused and options.get("impl_backend") == "torch"  # the forward this module patches
        lengths = _lengths(micro_batch) if ours and packed and not self.use_ulysses_sp else None
        if lengths is not None:
            positions = response_positions(*lengths).to(micro_batch["input_ids"].values().device)
            model_inputs[POSITIONS] = positions
            model_inputs[ENTROPY] = bool(tu.get_non_tensor_data(data=micro_batch, key="calculate_entropy",
                                                                default=False))
        return model_inputs, output_args

    return prepare_model_inputs


def _forward(original):
    @functools.wraps(original)
    def forward_with_torch_backend(self, input_ids=None, labels=None, temperature=1.0, shift_labels=None, **kwargs):
        positions = kwargs.pop(POSITIONS, None)
        with_entropy = kwargs.pop(ENTROPY, True)
        if positions is None:
            return original(self, input_ids=input_ids, labels=labels, temperature=temperature,
                            shift_labels=shift_labels, **kwargs)
        import torch
        from verl.models.transformers import qwen2_vl
        from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

        hidden = qwen2_vl.qwen2_vl_forward(self, input_ids, **kwargs)[0]  # (1, packed tokens, hidden)
        if not _said:  # once a process: the run's log shows the head in use and what it skips
            _said.add(True)
            print(f"[medvlthinker.compat pid={os.getpid()}] verl_response_logits: log-probabilities at "
                  f"{positions.numel()} of {hidden.shape[1]} packed positions", flush=True)
        targets = shift_labels if shift_labels is not None else torch.roll(input_ids, shifts=-1, dims=-1)
        logits = self.lm_head(hidden[0, positions]) / temperature  # (response tokens, vocab)
        log_probs = logprobs_from_logits(logits, targets[0, positions], inplace_backward=not with_entropy)
        full = hidden.new_zeros(targets.shape, dtype=log_probs.dtype)
        entropy = None
        if with_entropy:
            entropy = full.index_copy(1, positions, entropy_from_logits(logits).unsqueeze(0))
        return qwen2_vl.Qwen2VLCausalLMOutputForPPO(log_probs=full.index_copy(1, positions, log_probs.unsqueeze(0)),
                                                    entropy=entropy)

    return forward_with_torch_backend


def install() -> bool:
    """Install both pieces in this process (idempotent); True when they are in place."""
    if _saved:
        return True
    from verl.models.transformers import qwen2_vl
    from verl.workers.engine.fsdp import transformer_impl

    engine = transformer_impl.FSDPEngineWithLMHead
    _saved["prepare"] = engine.prepare_model_inputs
    _saved["forward"] = qwen2_vl.forward_with_torch_backend
    engine.prepare_model_inputs = _prepare_model_inputs(_saved["prepare"])
    # verl's monkey patch looks the forward up in this module when it builds the model
    qwen2_vl.forward_with_torch_backend = _forward(_saved["forward"])
    return True


def uninstall() -> None:
    if not _saved:
        return
    from verl.models.transformers import qwen2_vl
    from verl.workers.engine.fsdp import transformer_impl

    transformer_impl.FSDPEngineWithLMHead.prepare_model_inputs = _saved.pop("prepare")
    qwen2_vl.forward_with_torch_backend = _saved.pop("forward")


def install_if_requested() -> bool:
    if not requested():
        return False
    install()
    print(f"[medvlthinker.compat pid={os.getpid()}] installed verl_response_logits", flush=True)
    return True


def is_active() -> bool:
    return bool(_saved)


def targets_exist() -> bool:
    """Whether the installed verl still has both functions this replaces (an opt-in has nothing to probe beyond)."""
    from verl.models.transformers import qwen2_vl
    from verl.workers.engine.fsdp import transformer_impl

    return (hasattr(transformer_impl.FSDPEngineWithLMHead, "prepare_model_inputs")
            and hasattr(qwen2_vl, "forward_with_torch_backend"))


PATCH = Patch(
    name="verl_response_logits",
    target="verl.workers.engine.fsdp.transformer_impl.FSDPEngineWithLMHead.prepare_model_inputs, "
           "verl.models.transformers.qwen2_vl.forward_with_torch_backend",
    upstream="verl 0.9.1 verl/workers/engine/fsdp/transformer_impl.py:1145 (logits at every packed position)",
    symptom="not a fix: on a tiny model most of a GRPO step computes log-probabilities at prompt positions that "
            "verl then discards",
    library="verl", probe=targets_exist, install=install, uninstall=uninstall, is_active=is_active,
    where="every Ray worker (worker_process_setup_hook) where the variable asks for it; the demo does",
    switch=f"{ENV}=1", switched=requested, opt_in=True,
)
