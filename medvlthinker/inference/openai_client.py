"""The project's one client of an OpenAI-compatible chat API: the api backend (:mod:`~.api_backend`) and the
option writer of the eval set (:mod:`medvlthinker.prepare.option_writer`) both send their requests through it.

- The key is read from the environment variable ``api_key_env`` when the client is made and is held only by the
  ``openai`` client: it is never written anywhere.
- The endpoint is ``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI.
- ``timeout`` bounds a request in all, from connecting to the reply's last byte (a server that trickles bytes never
  trips a read timeout); a request past it counts as a failed attempt.
- One retry policy (:class:`RetryPolicy`): a connection error, a request past ``timeout``, a timeout, conflict or
  rate limit (408, 409, 429) and a server error (5xx) are tried again up to ``max_retries`` times, waiting
  ``backoff * 2**k`` seconds (at most ``max_backoff``, with jitter); the ``openai`` package's own retries are off.
  A bad key or model name (401, 403, 404) stops at once (:class:`EndpointError`), and so does a reply that is not
  a chat completion (not JSON, no choices) or, with ``same_model_only``, comes from another model.

>>> RetryPolicy().delays()[:4], RetryPolicy().delays()[-1]
([1.0, 2.0, 4.0, 8.0], 60.0)
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from medvlthinker import env
from medvlthinker.errors import UserError

API_KEY_ENV = "OPENAI_API_KEY"
API_BASE_ENV = "OPENAI_BASE_URL"
# HTTP statuses worth another try: timeouts, conflicts, rate limits, server errors (the others are the row's own
# problem, e.g. an image the API refuses, or the account's: a bad key or model name stops at once).
RETRY_STATUSES = frozenset({408, 409, 429})
FATAL_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing request is tried again (see the module)."""

    max_retries: int = 8
    backoff: float = 1.0
    max_backoff: float = 60.0

    def delay(self, attempt: int) -> float:
        """The longest wait before retry ``attempt`` (1, 2, ...); the wait drawn is 50-100% of it (jitter)."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1))

    def delays(self) -> list[float]:
        return [self.delay(attempt) for attempt in range(1, self.max_retries + 1)]


class EndpointError(UserError):
    """A failure of the account or the endpoint, not of one request: the caller stops."""


class _ReplyDeadline(Exception):
    """A reply still arriving after the request's total time (a server trickling bytes resets every read timeout)."""


def describe(exc: BaseException) -> str:
    """An exception as one short line: its class and its first 200 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def same_model(asked: str, answered: str | None) -> bool:
    """Whether the reply's ``model`` is the one asked for: the same name, or a dated snapshot of it (OpenAI answers
    ``gpt-4o`` with ``gpt-4o-2024-08-06``).

    >>> same_model("gpt-4o", "gpt-4o-2024-08-06"), same_model("m", "m"), same_model("qwen-7b", "qwen-72b")
    (True, True, False)
    """
    if not answered or answered == asked:
        return answered == asked
    return answered.startswith(asked + "-") and answered[len(asked) + 1:][:1].isdigit()


class ChatClient:
    """Chat completions of ``model`` on an OpenAI-compatible endpoint, sent with :meth:`create` (see the module).

    ``key_hint`` ends the fix of the missing-key error (what else the caller accepts instead of a key)."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = API_KEY_ENV,
                 timeout: float = 600.0, retry: RetryPolicy = RetryPolicy(), same_model_only: bool = True,
                 key_hint: str = "") -> None:
        key = env.user_named(api_key_env)
        if not key:
            raise UserError(f"environment variable {api_key_env} is not set; fix: export {api_key_env}=..."
                            + (f" {key_hint}" if key_hint else ""))
        try:
            from openai import OpenAI
        except ImportError:
            raise UserError("openai", "the package is not installed", fix="pip install openai") from None
        self.model, self.timeout, self.retry, self.same_model_only = model, timeout, retry, same_model_only
        self.base_url = base_url or env.get(API_BASE_ENV)
        self.client = OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"

    def create(self, **body: Any):
        """The checked chat completion of ``body`` (``model`` is this client's), tried again per the policy."""
        import openai

        body = {"model": self.model, **body}
        attempt = 0
        while True:
            try:
                return self._reply(body)
            except openai.APIStatusError as exc:
                if exc.status_code in FATAL_STATUSES:
                    raise EndpointError(f"api: {self.where} answered {exc.status_code} for model {self.model!r} "
                                        f"({describe(exc)}); fix: check {API_BASE_ENV}/--api_base, the key and "
                                        "--model") from None
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    raise
                error: Exception = exc
            except (openai.APIConnectionError, _ReplyDeadline) as exc:  # refused, reset, timed out: may come back
                error = exc
            attempt += 1
            if attempt > self.retry.max_retries:
                raise error
            time.sleep(self.retry.delay(attempt) * random.uniform(0.5, 1.0))

    def _reply(self, body: dict[str, Any]):
        """One request, read within ``timeout`` in all and checked."""
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
            raise EndpointError(f"api: {self.where} answered with something other than a chat completion "
                                f"({shown!r}: {describe(exc)}); fix: check {API_BASE_ENV}/--api_base (it must end "
                                "in /v1)") from None
        if not response.choices:
            raise EndpointError(f"api: {self.where} answered with no choices; fix: check the endpoint and --model")
        if self.same_model_only and not same_model(self.model, response.model):
            raise EndpointError(f"api: {self.where} answered with model {response.model!r}, not --model "
                                f"{self.model!r}; fix: pass the model the endpoint serves as --model, or point "
                                f"--api_base at the endpoint serving {self.model!r}")
        return response

    def close(self) -> None:
        self.client.close()
