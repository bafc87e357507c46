"""Three generation backends with one interface: ``generate(requests, settings, window=W)`` takes any iterable of
requests (a lazy generator is read only as fast as the engine needs) and yields ``(request, completions)`` as each
request finishes; ``completions`` holds ``settings.n`` :class:`Completion` (text with special tokens skipped, the
generated token count, the finish reason).

- :class:`VllmBackend`: vLLM offline. At most ``window`` requests are in the engine at any time; each finished
  request is handed back (and written) at once and replaced by the next one, so the batch stays full while long
  answers finish (no chunk barrier) and memory does not grow with the number of rows (vLLM keeps every
  enqueued request's processed pixels until it is scheduled).
- :class:`HfBackend`: transformers ``generate``, batched with left padding; for models vLLM lacks, and tests.
- :class:`~medvlthinker.inference.api_backend.ApiBackend` (module ``api_backend``): an OpenAI-compatible chat API
  (GPT-4o, or any ``vllm serve``): ``window`` requests in flight on threads, retries with backoff, and the rows
  still failing reported (``ApiRowsFailed``) after every other row has been handed back.

The two data types of the interface, ``Request`` and ``Completion``, live in :mod:`medvlthinker.inference.requests`;
which backend a run gets is decided in :func:`medvlthinker.inference.engines.make_backend`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from medvlthinker import env
from medvlthinker.inference.requests import Completion, Request
from medvlthinker.inference.settings import SamplingSettings

BACKENDS = ("vllm", "hf", "api")

# The default window holds this many times the engine's batch capacity, so requests wait in the engine's queue
# for the slots that free up while the next ones are being built (a multiprocess engine keeps stepping meanwhile).
WINDOW_HEADROOM = 1.25


def window_for_capacity(max_num_seqs: int, n: int) -> int:
    """Requests in flight that keep ``max_num_seqs`` sequences busy at ``n`` samples per request, with headroom.

    >>> window_for_capacity(256, 1), window_for_capacity(256, 16), window_for_capacity(4, 16)
    (320, 20, 2)
    """
    return max(1, math.ceil(WINDOW_HEADROOM * math.ceil(max_num_seqs / max(n, 1))))


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


def vllm_engine_args(
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
    mm_processor_cache_gb: float = 0.0,
    **engine_kwargs: Any,
) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments of a :class:`VllmBackend` (``engine_kwargs`` are passed through and win)."""
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
    # off by default: a run sees each image once, so the cache only holds memory (RunConfig's help says more)
    kwargs["mm_processor_cache_gb"] = mm_processor_cache_gb
    kwargs.update(engine_kwargs)
    return {"model": str(model), "tensor_parallel_size": tp_size, "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed, "load_format": load_format, **kwargs}


class VllmBackend:
    """vLLM offline engine, built from :func:`vllm_engine_args`. ``limit_mm_per_prompt`` defaults to the most
    images a row of the run has (videos 0: the profiler then never builds a dummy video, on CPU or GPU);
    ``mm_processor_cache_gb`` is 0 (vLLM's cache of processed images off) unless given."""

    name = "vllm"

    def __init__(self, model: str, **kwargs: Any) -> None:
        from vllm import LLM

        self.engine_args = vllm_engine_args(model, **kwargs)
        self.llm = LLM(**self.engine_args)

    @property
    def mm_processor_cache(self) -> str:
        """``on`` or ``off``: whether the engine holds a multimodal processor cache (read from the engine), or
        ``unknown`` where this vLLM version keeps it elsewhere."""
        renderer = getattr(self.llm.llm_engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "mm_processor_cache"):
            return "unknown"
        return "off" if renderer.mm_processor_cache is None else "on"

    @property
    def max_num_seqs(self) -> int:
        return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)

    def default_window(self, settings: SamplingSettings) -> int:
        """The engine's batch capacity in requests (max_num_seqs sequences / n per request), with headroom."""
        return window_for_capacity(self.max_num_seqs, settings.n)

    def generate(self, requests: Iterable[Request], settings: SamplingSettings, *,
                 window: int | None = None) -> Iterator[tuple[Request, list[Completion]]]:
        window = window or self.default_window(settings)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}; fix: --window 1 or more")
        params = settings.to_vllm()
        engine = self.llm.llm_engine
        source = iter(requests)
        pending: dict[str, Request] = {}
        self.peak_in_flight = 0

        def refill() -> None:
            batch = list(islice(source, window - len(pending)))
            if not batch:
                return
            per_request = [_for_request(params, settings, r) for r in batch]
            ids = self.llm.enqueue([r.vllm_input() for r in batch], per_request, use_tqdm=False)
            # enqueue returns the engine's internal ids ("{external}-{random suffix}"); outputs carry the external id.
            pending.update((self._external_id(rid), request) for rid, request in zip(ids, batch))
            # the engine's own count (n sequences per request), not ours: what the bound is about
            in_engine = math.ceil(engine.get_num_unfinished_requests() / settings.n)
            self.peak_in_flight = max(self.peak_in_flight, in_engine)

        refill()
        while pending:
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM finished without answering {len(pending)} request(s)")
            for out in engine.step():
                if out.finished and out.request_id in pending:
                    outputs = sorted(out.outputs, key=lambda c: c.index)
                    yield pending.pop(out.request_id), [
                        Completion(c.text, len(c.token_ids), c.finish_reason) for c in outputs]
            refill()

    @staticmethod
    def _external_id(request_id: str) -> str:
        head, sep, _ = request_id.rpartition("-")
        return head if sep else request_id

    def close(self) -> None:
        self.llm = None


def _with_max_tokens(params: Any, max_tokens: int) -> Any:
    clone = params.clone()
    clone.max_tokens = max_tokens
    return clone


def _for_request(params: Any, settings: SamplingSettings, request: Request) -> Any:
    """``params`` with the request's own max_tokens and seed (``SamplingSettings.row_seed``): a row's samples then
    do not depend on which rows share the engine, so a resumed run equals an uninterrupted one."""
    if request.max_tokens is not None:
        params = _with_max_tokens(params, request.max_tokens)
    seed = settings.row_seed(request.row.get("dataset_name"), request.dataset_index)
    if seed is not None:
        params = params.clone()
        params.seed = seed
    return params


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
        eos = self.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.peak_in_flight = 0

    def default_window(self, settings: SamplingSettings) -> int:
        """One batch: transformers ``generate`` holds exactly the requests of the batch it is running."""
        return self.batch_size

    def _completion(self, text: str, ids: list[int]) -> Completion:
        # generate pads a sequence that stopped early up to the batch's longest: count up to the first stop token
        for pos, token in enumerate(ids):
            if token in self._eos_ids:
                return Completion(text, pos + 1, "stop")
        return Completion(text, len(ids), "length")

    def generate(self, requests: Iterable[Request], settings: SamplingSettings, *,
                 window: int | None = None) -> Iterator[tuple[Request, list[Completion]]]:
        import torch
        from transformers import GenerationConfig

        size = min(self.batch_size, window or self.batch_size)
        if size < 1:
            raise ValueError(f"window must be >= 1, got {window}; fix: --window 1 or more")
        torch.manual_seed(settings.seed)
        seeded = settings.row_seed(None, 0) is not None
        if seeded:  # one request per generate call: its samples must not depend on the rows beside it
            size = 1
        config = GenerationConfig(**settings.to_hf_generate_kwargs(self.eos_token_id), pad_token_id=self.pad_token_id)
        per_prompt = config.num_return_sequences or 1
        source = iter(requests)
        self.peak_in_flight = 0
        while batch := list(islice(source, size)):
            if seeded:
                torch.manual_seed(settings.row_seed(batch[0].row.get("dataset_name"), batch[0].dataset_index))
            self.peak_in_flight = max(self.peak_in_flight, len(batch))
            images = [img for r in batch for img in r.images]
            inputs = self.processor(text=[r.prompt for r in batch], images=images or None, padding=True,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**inputs, generation_config=config)
            generated = out[:, inputs["input_ids"].shape[1]:]
            texts = self.processor.batch_decode(generated, skip_special_tokens=True)
            completions = [self._completion(text, ids) for text, ids in zip(texts, generated.tolist())]
            for i, request in enumerate(batch):
                mine = completions[i * per_prompt:(i + 1) * per_prompt]
                yield request, mine if per_prompt == settings.n else mine * settings.n

    def close(self) -> None:
        self.model = None


def visible_devices() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every GPU torch sees); empty on CPU."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []
