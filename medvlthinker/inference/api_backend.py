"""The api backend: an OpenAI-compatible chat API (GPT-4o, or any ``vllm serve``) behind the backends' interface
(:mod:`medvlthinker.inference.backends`): ``window`` requests in flight on threads, each sent through the project's
one client (:mod:`medvlthinker.inference.openai_client`: its key handling, deadline and retry policy), and the
rows still failing reported (:class:`ApiRowsFailed`) after every other row has been handed back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from medvlthinker.errors import UserError
from medvlthinker.inference.openai_client import API_KEY_ENV, ChatClient, EndpointError, RetryPolicy, describe
from medvlthinker.inference.requests import Completion, Request
from medvlthinker.inference.settings import SamplingSettings

API_WINDOW = 8
"""Requests in flight by default (``--window``): what a rate-limited API account usually takes."""


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
    """Rows as chat completions of an OpenAI-compatible endpoint, through :class:`ChatClient` (the key, the
    endpoint, ``timeout`` and the retry policy: ``max_retries``, ``backoff``, ``max_backoff``).

    Each row is one request with ``n`` choices and the run's sampling settings (seed included); ``window`` requests
    are in flight at once. A row still failing after the retries is reported at the end (:class:`ApiRowsFailed`),
    after every other row has been yielded. What the client stops at (a bad key or model name, a reply that is not
    a chat completion or comes from another model than ``model``) stops the run, and so does a reply with another
    number of choices than ``n``; each rollout keeps the answering model.
    """

    name = "api"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = API_KEY_ENV,
                 max_retries: int = 8, backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 600.0,
                 window: int = API_WINDOW, **unknown: Any) -> None:
        if unknown:
            raise ValueError(f"--engine_kwargs {sorted(unknown)} are not settings of the api backend; fix: use "
                             "max_retries, backoff, max_backoff, timeout")
        self.chat = ChatClient(model, base_url=base_url, api_key_env=api_key_env, timeout=timeout,
                               retry=RetryPolicy(max_retries, backoff, max_backoff),
                               key_hint="(any value for a local server started without --api-key)")
        self.model = model
        self.window = window
        self.peak_in_flight = 0
        self.failed: dict[int, str] = {}

    def default_window(self, settings: SamplingSettings) -> int:
        return self.window

    def _create(self, request: Request, settings: SamplingSettings) -> list[Completion]:
        max_tokens = request.max_tokens or settings.max_tokens
        seed = settings.row_seed(request.row.get("dataset_name"), request.dataset_index)
        response = self.chat.create(
            messages=api_messages(request), temperature=settings.temperature, top_p=settings.top_p,
            max_tokens=max_tokens, n=settings.n, seed=settings.seed if seed is None else seed)
        if response.usage is not None:
            request.prompt_tokens = int(response.usage.prompt_tokens)
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != settings.n:
            raise EndpointError(f"api: {self.chat.where} returned {len(choices)} choice(s) for --n {settings.n} "
                                f"(dataset_index {request.dataset_index}); fix: use an endpoint that supports n "
                                "(vllm serve does), or --n 1")
        total = response.usage.completion_tokens if response.usage is not None else 0
        # the API reports one completion-token total per request: with n > 1 each choice gets an even share
        shares = _even_shares(total, len(choices))
        return [Completion(reply_text(choice.message), tokens, choice.finish_reason, model=response.model)
                for choice, tokens in zip(choices, shares)]

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
                    pending[pool.submit(self._create, request, settings)] = request
                self.peak_in_flight = max(self.peak_in_flight, len(pending))

            try:
                refill()
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        request = pending.pop(future)
                        try:
                            completions = future.result()
                        except EndpointError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - the row is reported, never dropped
                            self.failed[request.dataset_index] = describe(exc)
                            continue
                        yield request, completions
                    refill()
            finally:
                for future in pending:
                    future.cancel()
        if self.failed:
            raise ApiRowsFailed(self.failed, self.chat.retry.max_retries + 1)

    def close(self) -> None:
        self.chat.close()
