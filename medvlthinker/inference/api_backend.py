"""The api backend: an OpenAI-compatible chat API (GPT-4o, or any ``vllm serve``) behind the backends' interface
(:mod:`medvlthinker.inference.backends`): ``window`` requests in flight on threads, retries with backoff, and the
rows still failing reported (:class:`ApiRowsFailed`) after every other row has been handed back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from medvlthinker import env
from medvlthinker.cli import UserError
from medvlthinker.inference.requests import Completion, Request
from medvlthinker.inference.settings import SamplingSettings

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


def same_model(asked: str, answered: str | None) -> bool:
    """Whether the reply's ``model`` is the one asked for: the same name, or a dated snapshot of it (OpenAI answers
    ``gpt-4o`` with ``gpt-4o-2024-08-06``).

    >>> same_model("gpt-4o", "gpt-4o-2024-08-06"), same_model("m", "m"), same_model("qwen-7b", "qwen-72b")
    (True, True, False)
    """
    if not answered or answered == asked:
        return answered == asked
    return answered.startswith(asked + "-") and answered[len(asked) + 1:][:1].isdigit()


class _ReplyDeadline(Exception):
    """A reply still arriving after the request's total time (a server trickling bytes resets every read timeout)."""


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
    (:class:`ApiRowsFailed`), after every other row has been yielded. ``timeout`` bounds a request in all, from
    connecting to the reply's last byte (a server that trickles bytes never trips a read timeout), and counts as a
    failed attempt. A bad key or model name stops at once, and so does an endpoint that does not answer as the
    chat API does: a reply that is not JSON or has no choices, from another model than ``model`` (a dated
    snapshot of it is the same model), or with another number of choices than ``n``; each rollout keeps the
    answering model.
    """

    name = "api"

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = API_KEY_ENV,
                 max_retries: int = 8, backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 600.0,
                 window: int = API_WINDOW, **unknown: Any) -> None:
        if unknown:
            raise ValueError(f"--engine_kwargs {sorted(unknown)} are not settings of the api backend; fix: use "
                             "max_retries, backoff, max_backoff, timeout")
        key = env.user_named(api_key_env)
        if not key:
            raise ValueError(f"environment variable {api_key_env} is not set; fix: export {api_key_env}=... (any "
                             "value for a local server started without --api-key)")
        from openai import OpenAI

        self.model = model
        self.base_url = base_url or env.get(API_BASE_ENV)
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.window = window
        # the client's own retries are off: this backend retries, with a longer patience (a restarting server)
        self.client = OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
        self.timeout = timeout
        self.peak_in_flight = 0
        self.failed: dict[int, str] = {}

    def default_window(self, settings: SamplingSettings) -> int:
        return self.window

    def _create(self, request: Request, settings: SamplingSettings) -> list[Completion]:
        max_tokens = request.max_tokens or settings.max_tokens
        seed = settings.row_seed(request.row.get("dataset_name"), request.dataset_index)
        response = self._reply(dict(
            model=self.model, messages=api_messages(request), temperature=settings.temperature,
            top_p=settings.top_p, max_tokens=max_tokens, n=settings.n, seed=settings.seed if seed is None else seed))
        if response.usage is not None:
            request.prompt_tokens = int(response.usage.prompt_tokens)
        choices = sorted(response.choices, key=lambda c: c.index)
        if len(choices) != settings.n:
            raise _Fatal(f"api: {self._where()} returned {len(choices)} choice(s) for --n {settings.n} (dataset_index "
                         f"{request.dataset_index}); fix: use an endpoint that supports n (vllm serve does), or --n 1")
        total = response.usage.completion_tokens if response.usage is not None else 0
        # the API reports one completion-token total per request: with n > 1 each choice gets an even share
        shares = _even_shares(total, len(choices))
        return [Completion(reply_text(choice.message), tokens, choice.finish_reason, model=response.model)
                for choice, tokens in zip(choices, shares)]

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    def _reply(self, body: dict[str, Any]):
        """The chat completion for ``body``, read within ``timeout`` in all and checked (see the class)."""
        import json
        import time

        import pydantic
        from openai.types.chat import ChatCompletion

        deadline = time.monotonic() + self.timeout
        data = bytearray()
        with self.client.chat.completions.with_streaming_response.create(**body) as raw:
            for chunk in raw.iter_bytes():
                data += chunk
                if time.monotonic() > deadline:
                    raise _ReplyDeadline(f"the reply took more than {self.timeout:g} s in all (--engine_kwargs "
                                         "timeout)")
        try:
            response = ChatCompletion.model_validate(json.loads(data))
        except (ValueError, pydantic.ValidationError) as exc:
            shown = bytes(data[:80]).decode("utf-8", "replace")
            raise _Fatal(f"api: {self._where()} answered with something other than a chat completion ({shown!r}: "
                         f"{_short(exc)}); fix: check {API_BASE_ENV}/--api_base (it must end in /v1)") from None
        if not response.choices:
            raise _Fatal(f"api: {self._where()} answered with no choices; fix: check the endpoint and --model")
        if not same_model(self.model, response.model):
            raise _Fatal(f"api: {self._where()} answered with model {response.model!r}, not --model {self.model!r}; "
                         "fix: pass the model the endpoint serves as --model, or point --api_base at the endpoint "
                         f"serving {self.model!r}")
        return response

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
            except (openai.APIConnectionError, _ReplyDeadline) as exc:  # refused, reset, timed out: may come back
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
