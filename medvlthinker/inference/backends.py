"""Two generation backends with one interface: ``generate(requests, settings)`` yields ``(request, texts)`` as
each request finishes (``texts`` has ``settings.n`` output strings, special tokens skipped).

- :class:`VllmBackend`: vLLM offline. The whole shard is enqueued at once and the engine is stepped here, so a
  finished request is handed back (and written) immediately while the others keep the batch full; there is no
  chunk barrier waiting on the longest answer.
- :class:`HfBackend`: transformers ``generate``, batched with left padding; for models vLLM lacks, and tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from medvlthinker.inference.requests import Request
from medvlthinker.inference.settings import SamplingSettings

BACKENDS = ("vllm", "hf")


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def cpu_engine_defaults() -> dict[str, Any]:
    """Engine arguments used when no GPU is visible (vLLM's CPU build): float32 and eager mode, as the CPU
    backend requires. On a GPU none of these apply, so GPU runs keep vLLM's own defaults."""
    return {"dtype": "float32", "enforce_eager": True}


class VllmBackend:
    """vLLM offline engine. ``limit_mm_per_prompt`` defaults to the most images a row of the run has (videos 0:
    the profiler then never builds a dummy video, on CPU or GPU)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tp_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        limit_mm_per_prompt: dict[str, int] | None = None,
        seed: int = 42,
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        tokenizer: str | None = None,
        load_format: str = "auto",
        **engine_kwargs: Any,
    ) -> None:
        from vllm import LLM

        kwargs: dict[str, Any] = cpu_engine_defaults() if _on_cpu() else {"dtype": "bfloat16"}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if enforce_eager is not None:
            kwargs["enforce_eager"] = enforce_eager
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if limit_mm_per_prompt is not None:
            kwargs["limit_mm_per_prompt"] = dict(limit_mm_per_prompt)
        if tokenizer is not None:
            kwargs["tokenizer"] = tokenizer
        kwargs.update(engine_kwargs)
        self.engine_args = {
            "model": str(model), "tensor_parallel_size": tp_size, "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed, "load_format": load_format, **kwargs,
        }
        self.llm = LLM(**self.engine_args)

    @classmethod
    def from_llm(cls, llm: Any) -> VllmBackend:
        """Wrap an engine that already exists (benchmarks compare raw ``LLM.generate`` with the runner on one)."""
        backend = cls.__new__(cls)
        backend.engine_args = {}
        backend.llm = llm
        return backend

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, list[str]]]:
        if not requests:
            return
        params = settings.to_vllm()
        ids = self.llm.enqueue([r.vllm_input() for r in requests], params, use_tqdm=False)
        # enqueue returns the engine's internal ids ("{external}-{random suffix}"); outputs carry the external id.
        pending = {self._external_id(rid): request for rid, request in zip(ids, requests)}
        engine = self.llm.llm_engine
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished and out.request_id in pending:
                    outputs = sorted(out.outputs, key=lambda c: c.index)
                    yield pending.pop(out.request_id), [c.text for c in outputs]
        if pending:
            raise RuntimeError(f"vLLM finished without answering {len(pending)} request(s)")

    @staticmethod
    def _external_id(request_id: str) -> str:
        head, sep, _ = request_id.rpartition("-")
        return head if sep else request_id

    def close(self) -> None:
        self.llm = None


class HfBackend:
    """transformers ``generate``: batches of ``batch_size`` prompts, left padding, the model's eos ids."""

    name = "hf"

    def __init__(self, model: str, *, dtype: str | None = None, batch_size: int = 8, device: str | None = None,
                 attn_implementation: str | None = None) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = "float32" if self.device == "cpu" else "bfloat16"
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=getattr(torch, dtype), **extra)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        gen = self.model.generation_config
        self.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None else self.processor.tokenizer.eos_token_id
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.processor.tokenizer.pad_token_id
        self.pad_token_id = pad

    def _batches(self, requests: Sequence[Request]) -> Iterable[list[Request]]:
        for start in range(0, len(requests), self.batch_size):
            yield list(requests[start:start + self.batch_size])

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, list[str]]]:
        import torch
        from transformers import GenerationConfig

        torch.manual_seed(settings.seed)
        config = GenerationConfig(**settings.to_hf_generate_kwargs(self.eos_token_id), pad_token_id=self.pad_token_id)
        per_prompt = config.num_return_sequences or 1
        for batch in self._batches(requests):
            images = [img for r in batch for img in r.images]
            inputs = self.processor(text=[r.prompt for r in batch], images=images or None, padding=True,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**inputs, generation_config=config)
            texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, request in enumerate(batch):
                mine = texts[i * per_prompt:(i + 1) * per_prompt]
                yield request, mine if per_prompt == settings.n else mine * settings.n

    def close(self) -> None:
        self.model = None


def make_backend(name: str, model: str, **kwargs: Any):
    """The backend called ``name`` (``vllm`` or ``hf``); kwargs the backend does not take are dropped."""
    if name == "vllm":
        return VllmBackend(model, **kwargs)
    if name == "hf":
        keep = {k: kwargs[k] for k in ("dtype", "batch_size", "device", "attn_implementation") if k in kwargs}
        return HfBackend(model, **keep)
    raise ValueError(f"unknown backend {name!r}; fix: --backend one of {BACKENDS}")


def visible_devices() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every GPU torch sees); empty on CPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []
