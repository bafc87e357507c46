"""Three generation backends with one interface: ``generate(requests, settings, window=W)`` takes any iterable of
requests (a lazy generator is read only as fast as the engine needs) and yields ``(request, completions)`` as each
request finishes; ``completions`` holds ``settings.n`` :class:`Completion` (text with special tokens skipped, the
generated token count, the finish reason).

- :class:`VllmBackend`: vLLM offline. At most ``window`` requests are in the engine at any time; each finished
  request is handed back (and written) at once and replaced by the next one, so the batch stays full while long
  answers finish (no chunk barrier) and memory does not grow with the number of rows (vLLM keeps every
  enqueued request's processed pixels until it is scheduled).
- :class:`HfBackend`: transformers ``generate``, batched with left padding; for models vLLM lacks, and tests.
- :class:`ApiBackend`: an OpenAI-compatible chat API (GPT-4o, or any ``vllm serve``): ``window`` requests in
  flight on threads, retries with backoff, and the rows still failing reported (:class:`ApiRowsFailed`) after
  every other row has been handed back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from medvlthinker.cli import UserError
from medvlthinker.inference.requests import Request
from medvlthinker.inference.settings import SamplingSettings

BACKENDS = ("vllm", "hf", "api")

# The default window holds this many times the engine's batch capacity, so requests wait in the engine's queue
# for the slots that free up while the next ones are being built (a multiprocess engine keeps stepping meanwhile).
WINDOW_HEADROOM = 1.25


@dataclass(frozen=True)
class Completion:
    """One generated answer: its text, the number of tokens generated (the stop token included) and why it
    ended: ``"stop"`` (end of sequence) or ``"length"`` (max_tokens reached)."""

    text: str
    output_tokens: int
    finish_reason: str | None


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
            per_request = [params if r.max_tokens is None else _with_max_tokens(params, r.max_tokens) for r in batch]
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
        config = GenerationConfig(**settings.to_hf_generate_kwargs(self.eos_token_id), pad_token_id=self.pad_token_id)
        per_prompt = config.num_return_sequences or 1
        source = iter(requests)
        self.peak_in_flight = 0
        while batch := list(islice(source, size)):
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


def make_backend(name: str, model: str, **kwargs: Any):
    """The backend called ``name`` (``vllm``, ``hf`` or ``api``); kwargs the hf backend does not take are
    dropped."""
    if name == "vllm":
        return VllmBackend(model, **kwargs)
    if name == "hf":
        keep = {k: kwargs[k] for k in ("dtype", "batch_size", "device", "attn_implementation") if k in kwargs}
        return HfBackend(model, **keep)
    if name == "api":
        return ApiBackend(model, **kwargs)
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


# ---------------------------------------------------------------- an OpenAI-compatible API

API_KEY_ENV = "OPENAI_API_KEY"
API_BASE_ENV = "OPENAI_BASE_URL"
API_WINDOW = 8
"""Requests in flight by default (``--window``): what a rate-limited API account usually takes."""
# HTTP statuses worth another try: timeouts, conflicts, rate limits, server errors (the others are the row's own
# problem, e.g. an image the API refuses, or the account's: a bad key or model name stops the run at once).
RETRY_STATUSES = frozenset({408, 409, 429})
FATAL_STATUSES = frozenset({401, 403, 404})


class ApiRowsFailed(UserError):
    """Rows the API still failed after every retry; their records are not written, so a rerun asks again (a user
    error: the command line prints it as one line)."""

    def __init__(self, failed: dict[int, str], attempts: int) -> None:
        self.failed = dict(sorted(failed.items()))
        indices = ", ".join(str(i) for i in self.failed)
        index, error = next(reversed(self.failed.items()))
        super().__init__("api", f"{len(self.failed)} row(s) still failing (up to {attempts} attempts each), "
                         f"dataset_index {indices} ({index}: {error}); their records are not written",
                         fix="rerun the same command to retry them (every other row is kept), or raise "
                             "--engine_kwargs max_retries")


def image_data_url(image: Any) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL: RGB, not resized (the original's API rows)."""
    import base64
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def api_messages(request: Request) -> list[dict[str, Any]]:
    """The request as one OpenAI user message: an ``image_url`` part per image, then the user text (the same
    parts, in the same order, as :func:`medvlthinker.prompts.build_messages`; the server applies its template)."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_data_url(img)}}
                                   for img in request.images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": request.prompt}]}]


def with_reasoning(content: str | None, reasoning: str | None) -> str:
    """The answer text of a reply: a separate reasoning field (``reasoning_content``) wrapped in ``<think>`` before
    the content, as the original did for models that return one.

    >>> with_reasoning("<answer> A </answer>", "It is red."), with_reasoning("B", None)
    ('<think>It is red.</think><answer> A </answer>', 'B')
    """
    content = content or ""
    return f"<think>{reasoning}</think>{content}" if reasoning else content


def reply_text(message: Any) -> str:
    """The text of an API reply message, its reasoning field wrapped in front (:func:`with_reasoning`). The field
    is ``reasoning_content`` (DeepSeek, litellm, older vLLM) or ``reasoning`` (newer vLLM), an extra field of the
    openai package's message."""
    extra = getattr(message, "model_extra", None) or {}
    reasoning = getattr(message, "reasoning_content", None) or extra.get("reasoning_content") or extra.get("reasoning")
    return with_reasoning(message.content, reasoning)


def _even_shares(total: int, n: int) -> list[int]:
    base, extra = divmod(max(total, 0), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


class ApiBackend:
    """A chat-completions client (the ``openai`` package) on any OpenAI-compatible endpoint.

    The key is read from the environment variable ``api_key_env`` when the backend starts and is held only by the
    client (never written anywhere). Each row is one request with ``n`` choices and the run's sampling settings
    (seed included); ``window`` requests are in flight at once. A request that fails with a connection error, a
    timeout, a rate limit or a server error is retried up to ``max_retries`` times, waiting ``backoff * 2**k``
    seconds (at most ``max_backoff``, with jitter); a row still failing is reported at the end
    (:class:`ApiRowsFailed`), after every other row has been yielded. A bad key or model name stops at once.
    """

    name = "api"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = API_KEY_ENV,
                 max_retries: int = 8, backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 600.0,
                 window: int = API_WINDOW, **unknown: Any) -> None:
        if unknown:
            raise ValueError(f"--engine_kwargs {sorted(unknown)} are not settings of the api backend; fix: use "
                             "max_retries, backoff, max_backoff, timeout")
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"environment variable {api_key_env} is not set; fix: export {api_key_env}=... (any "
                             "value for a local server started without --api-key)")
        from openai import OpenAI

        self.model = model
        self.base_url = base_url or os.environ.get(API_BASE_ENV)
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.window = window
        # the client's own retries are off: this backend retries, with a longer patience (a restarting server)
        self.client = OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
        self.peak_in_flight = 0
        self.failed: dict[int, str] = {}

    def default_window(self, settings: SamplingSettings) -> int:
        return self.window

    def _create(self, request: Request, settings: SamplingSettings) -> list[Completion]:
        max_tokens = request.max_tokens or settings.max_tokens
        response = self.client.chat.completions.create(
            model=self.model, messages=api_messages(request), temperature=settings.temperature,
            top_p=settings.top_p, max_tokens=max_tokens, n=settings.n, seed=settings.seed)
        if response.usage is not None:
            request.prompt_tokens = int(response.usage.prompt_tokens)
        choices = sorted(response.choices, key=lambda c: c.index)
        total = response.usage.completion_tokens if response.usage is not None else 0
        # the API reports one completion-token total per request: with n > 1 each choice gets an even share
        shares = _even_shares(total, len(choices)) if choices else []
        return [Completion(reply_text(choice.message), tokens, choice.finish_reason)
                for choice, tokens in zip(choices, shares)]

    def _with_retries(self, request: Request, settings: SamplingSettings) -> list[Completion]:
        import random
        import time

        import openai

        attempt = 0
        while True:
            try:
                return self._create(request, settings)
            except openai.APIStatusError as exc:
                if exc.status_code in FATAL_STATUSES:
                    raise _Fatal(f"api: {self.base_url or 'the OpenAI API'} answered {exc.status_code} for model "
                                 f"{self.model!r} ({_short(exc)}); fix: check {API_BASE_ENV}/--api_base, the key "
                                 "and --model") from None
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    raise
                error: Exception = exc
            except openai.APIConnectionError as exc:  # refused, reset, timed out: the server may come back
                error = exc
            attempt += 1
            if attempt > self.max_retries:
                raise error
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            time.sleep(delay * random.uniform(0.5, 1.0))

    def generate(self, requests: Iterable[Request], settings: SamplingSettings, *,
                 window: int | None = None) -> Iterator[tuple[Request, list[Completion]]]:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        window = window or self.window
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}; fix: --window 1 or more")
        source = iter(requests)
        self.failed = {}
        self.peak_in_flight = 0
        with ThreadPoolExecutor(max_workers=window) as pool:
            pending: dict[Any, Request] = {}

            def refill() -> None:
                for request in islice(source, window - len(pending)):
                    pending[pool.submit(self._with_retries, request, settings)] = request
                self.peak_in_flight = max(self.peak_in_flight, len(pending))

            try:
                refill()
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        request = pending.pop(future)
                        try:
                            completions = future.result()
                        except _Fatal:
                            raise
                        except Exception as exc:  # noqa: BLE001 - the row is reported, never dropped
                            self.failed[request.dataset_index] = _short(exc)
                            continue
                        yield request, completions
                    refill()
            finally:
                for future in pending:
                    future.cancel()
        if self.failed:
            raise ApiRowsFailed(self.failed, self.max_retries + 1)

    def close(self) -> None:
        self.client.close()


class _Fatal(UserError):
    """A failure of the account or endpoint, not of one row: the run stops."""


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
