"""One object for the sampling settings, converted to vLLM ``SamplingParams`` or transformers ``generate`` kwargs.

The paper's settings (docs/protocol.md sections 5 and 6) are the two presets: :data:`EVAL_GREEDY` for the table and
:data:`PASS_RATE` for the n=16 curation samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings shared by the vLLM and transformers backends.

    ``temperature`` 0 means greedy decoding. ``seed`` seeds the engine (vLLM ``LLM(seed=...)``, as the original)
    or torch before transformers generates. ``ignore_eos`` forces ``max_tokens`` new tokens (benchmarks only).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    n: int = 1
    seed: int = 42
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}; fix: --temperature 0 for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}; fix: --top_p 1.0")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def replace(self, **changes: Any) -> SamplingSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_vllm(self):
        """vLLM ``SamplingParams``. The seed goes to the engine, not to each request, as in the original."""
        from vllm import SamplingParams

        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            ignore_eos=self.ignore_eos,
        )

    def to_hf_generate_kwargs(self, eos_token_id: int | list[int] | None = None) -> dict[str, Any]:
        """Keyword arguments for a transformers ``GenerationConfig`` (the backend builds a fresh one from them).

        Greedy decoding returns one sequence per prompt (transformers refuses ``num_return_sequences`` > 1
        without sampling); the backend repeats it ``n`` times, which is what greedy sampling gives anyway.

        >>> SamplingSettings(temperature=1.0, n=4, max_tokens=8).to_hf_generate_kwargs()["num_return_sequences"]
        4
        """
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_tokens}
        if self.greedy:
            kwargs.update(do_sample=False, num_return_sequences=1)
        else:
            # top_k 0 and repetition_penalty 1.0: the plain temperature/top-p sampling vLLM does with these
            # SamplingParams (a checkpoint's generation_config.json must not sneak in top_k=1 or a penalty).
            kwargs.update(do_sample=True, num_return_sequences=self.n, temperature=self.temperature,
                          top_p=self.top_p, top_k=0, repetition_penalty=1.0)
        if self.ignore_eos:
            kwargs["min_new_tokens"] = self.max_tokens
        if eos_token_id is not None:
            kwargs["eos_token_id"] = eos_token_id
        return kwargs


EVAL_GREEDY = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=4096, n=1, seed=42)
"""The published table: greedy, 4096 new tokens, seed 42 (docs/protocol.md section 5)."""

PASS_RATE = SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=4096, n=16, seed=42)
"""Pass-rate curation: 16 samples at temperature 1.0 (docs/protocol.md section 6)."""
