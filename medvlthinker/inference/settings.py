"""One object for the sampling settings, converted to vLLM ``SamplingParams`` or transformers ``generate`` kwargs.

The paper's settings are the presets (:data:`PRESETS`, ``--preset`` of eval/run_offline_inference.py):
:data:`EVAL_GREEDY` for the table (docs/protocol.md section 5), :data:`PASS_RATE` for the curation samples
(section 6), :data:`METRICS_AT_N` and :data:`PASS_AT_K` for the sampling analyses (section 10). The curation band
that reads the pass-rate samples, :data:`CURATION`, lives beside them. Every other module imports these numbers.

>>> PRESETS["pass_rate"].n, CURATION.rollouts, (CURATION.remove_pass_count_below, CURATION.remove_pass_count_above)
(16, 16, (1, 7))
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from medvlthinker.cli import option


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings shared by the vLLM and transformers backends.

    ``temperature`` 0 means greedy decoding. ``seed`` seeds the engine (vLLM ``LLM(seed=...)``, as the original)
    or torch before transformers generates. ``ignore_eos`` forces ``max_tokens`` new tokens (benchmarks only).
    """

    # the defaults are the paper's eval settings (docs/protocol.md section 5): EVAL_GREEDY below is this default
    temperature: float = option(0.0, "0 = greedy (the table); 1.0 for pass rates")
    top_p: float = option(1.0, "nucleus sampling mass (1.0: off)")
    max_tokens: int = option(4096, "new tokens per rollout at most")
    n: int = option(1, "rollouts per row")
    seed: int = option(42, "the engine's seed (vLLM LLM(seed=...), as the original; torch for the hf backend)")
    engine_seed_only: bool = option(False, "seed the engine alone, as the original: a row's samples then depend on "
                                    "the rows beside it, so a resumed run differs from an uninterrupted one "
                                    "(default: each request is seeded from --seed and its row)")
    ignore_eos: bool = option(False, "generate max_tokens tokens whatever the model says (benchmarks only)",
                              cli=False)

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

    def row_seed(self, dataset_name: str | None, dataset_index: int) -> int | None:
        """The seed of one row's request when sampling (None when greedy or ``engine_seed_only``: the engine's
        stream).

        It depends on ``seed`` and the row alone, not on the rows beside it in the engine, so a resumed run draws
        the same samples for a row as an uninterrupted one.

        >>> s = SamplingSettings(temperature=1.0)
        >>> s.row_seed("pmc_vqa", 3) == s.row_seed("pmc_vqa", 3) != s.row_seed("pmc_vqa", 4)
        True
        >>> SamplingSettings().row_seed("pmc_vqa", 3) is None  # greedy: nothing to seed
        True
        """
        if self.greedy or self.engine_seed_only:
            return None
        digest = hashlib.sha256(f"{self.seed}\0{dataset_name}\0{dataset_index}".encode()).digest()
        return int.from_bytes(digest[:4], "big") >> 1

    def to_vllm(self):
        """vLLM ``SamplingParams``. The seed goes to the engine (as in the original); unless ``engine_seed_only``
        each sampled request then gets its own (:meth:`row_seed`, set by the backend)."""
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


SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingSettings))
"""The names of the sampling settings (RunConfig carries them as flat fields)."""

EVAL_GREEDY = SamplingSettings()
"""The published table: greedy, 4096 new tokens, seed 42 (docs/protocol.md section 5)."""

PASS_RATE = EVAL_GREEDY.replace(temperature=1.0, n=16)
"""Pass-rate curation: 16 samples at temperature 1.0 (docs/protocol.md section 6)."""

METRICS_AT_N = EVAL_GREEDY.replace(temperature=0.5, n=5)
"""metrics@5 (mean accuracy, majority vote, pass@5): 5 samples at temperature 0.5 (docs/protocol.md section 10)."""

PASS_AT_K = EVAL_GREEDY.replace(temperature=0.5, top_p=0.95, n=64)
"""pass@k curves, k = 1..64: 64 samples at temperature 0.5, top_p 0.95 (docs/protocol.md section 10)."""

PRESETS: dict[str, SamplingSettings] = {
    "eval": EVAL_GREEDY, "pass_rate": PASS_RATE, "metrics_at_n": METRICS_AT_N, "pass_at_k": PASS_AT_K,
}
"""``--preset NAME`` of the eval command: the paper's sampling settings of each experiment."""


@dataclass(frozen=True)
class CurationSettings:
    """Which pass-rate samples a curated training set keeps, and in what order (docs/protocol.md section 6)."""

    rollouts: int = PASS_RATE.n
    remove_pass_count_below: int = 1
    remove_pass_count_above: int = 7
    seed: int = 42
    order: str = "easy_to_hard"


CURATION = CurationSettings()
"""The paper's curation: keep 1 <= pass_count <= 7 of 16 rollouts, shuffle with seed 42, then easy to hard."""
