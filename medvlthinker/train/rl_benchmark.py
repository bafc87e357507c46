"""The log-probability heads of verl's actor on one packed micro-batch: verl's own paths against the project's
response-only one (:mod:`medvlthinker.compat.verl_response_logits`), timed in one process, interleaved.

``benchmarks/benchmark_response_logits.py`` prints the figures. Each repetition times, for every head in turn:

- ``log_prob``: a no-grad forward returning log-probabilities and entropies, what ``compute_log_prob`` of the
  actor (old log-probs) runs;
- ``update``: a forward and backward of a loss on the log-probabilities without the entropy, what one micro-batch
  of ``update_actor`` runs (the paper's entropy coefficient is 0).

The micro-batch is ``sequences`` packed sequences of ``prompt_len`` + ``response_len`` text tokens (the demo's shape
by default: 8 x (86 + 24), the prompt of the paper's instruction and a short answer).
"""

from __future__ import annotations

import statistics
import time

HEADS = ("verl default", "verl fused (torch)", "response only")
"""verl's default path (full logits, then log-softmax and entropy: the paper configs'), verl's fused torch path
(the same over chunks), and the project's patch of the fused path (the response tokens only)."""


def _inputs(sequences: int, prompt_len: int, response_len: int, vocab: int):
    import torch

    from medvlthinker.compat.verl_response_logits import response_positions

    generator = torch.Generator().manual_seed(0)
    length = prompt_len + response_len
    input_ids = torch.randint(1, vocab, (1, sequences * length), generator=generator)
    text = torch.arange(length).repeat(sequences).unsqueeze(0)
    position_ids = text.unsqueeze(0).expand(4, 1, -1).clone()
    positions = response_positions(torch.full((sequences,), prompt_len), torch.full((sequences,), response_len))
    return input_ids, position_ids, positions


def time_heads(model_dir: str, *, sequences: int = 8, prompt_len: int = 86, response_len: int = 24,
               repeats: int = 5, warmup: int = 1) -> dict[str, dict[str, list[float]]]:
    """Seconds per micro-batch, ``{head: {"log_prob": [...], "update": [...]}}``, one value a repetition."""
    import torch
    from transformers import AutoModelForImageTextToText
    from verl.models.transformers import qwen2_vl
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    from medvlthinker.compat import verl_response_logits
    from medvlthinker.compat.cpu_allocator import keep_freed_memory_on_cpu

    keep_freed_memory_on_cpu()  # as verl's CPU workers do (medvlthinker.compat.verl_plugin)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    input_ids, position_ids, positions = _inputs(sequences, prompt_len, response_len, model.lm_head.out_features)
    labels = torch.roll(input_ids, shifts=-1, dims=-1)

    def default(entropy: bool):
        # what prepare_model_outputs does with the logits of forward_with_normal_backend
        logits = qwen2_vl.forward_with_normal_backend(model, input_ids, position_ids=position_ids).logits[0]
        log_probs = logprobs_from_logits(logits, labels[0], inplace_backward=not entropy)
        return log_probs, (entropy_from_logits(logits) if entropy else None)

    def fused(entropy: bool):
        out = qwen2_vl.forward_with_torch_backend(model, input_ids, position_ids=position_ids, shift_labels=labels)
        return out.log_probs[0], out.entropy

    response_only = verl_response_logits._forward(qwen2_vl.forward_with_torch_backend)

    def ours(entropy: bool):
        out = response_only(model, input_ids, position_ids=position_ids, shift_labels=labels,
                            **{verl_response_logits.POSITIONS: positions, verl_response_logits.ENTROPY: entropy})
        return out.log_probs[0], out.entropy

    heads = dict(zip(HEADS, (default, fused, ours)))

    def log_prob(head):
        with torch.no_grad():
            head(True)

    def update(head):
        model.zero_grad(set_to_none=True)
        log_probs, _ = head(False)
        log_probs[positions].sum().backward()

    times: dict[str, dict[str, list[float]]] = {name: {"log_prob": [], "update": []} for name in heads}
    for rep in range(warmup + repeats):
        for name, head in heads.items():
            for kind, run in (("log_prob", log_prob), ("update", update)):
                start = time.perf_counter()
                run(head)
                if rep >= warmup:
                    times[name][kind].append(time.perf_counter() - start)
    return times


def medians(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """The median of each head's repetitions.

    >>> medians({"a": {"log_prob": [3.0, 1.0, 2.0], "update": [4.0]}})
    {'a': {'log_prob': 2.0, 'update': 4.0}}
    """
    return {name: {kind: statistics.median(values) for kind, values in kinds.items()} for name, kinds in times.items()}
