"""Options for closed VQA questions, written by an LLM from the question and its answer (docs/eval_set.md).

PathVQA, SLAKE and VQA-RAD give a closed question and its answer, no options. The original recipe asked an LLM
(GPT-4o through an OpenAI-compatible API) for the options, as a JSON list of strings, and asked again (at most 5
tries) until the list had more than one entry and held the answer (compared case-insensitively).

The LLM is a *completer*: any callable ``messages -> reply text`` (a list of chat messages in, the assistant's
text out). :class:`OpenAIChat` is the real one; tests pass a deterministic local function. Answers are cached per
row in ``<cache_dir>/<key>.json`` (``{"question", "answer", "options"}``, the original's cache layout, keyed by
:func:`row_key`), so a rerun makes no call for a row already written; a row that still fails is not cached and is
asked again on the next run.

>>> parse_reply('```json\\n["Yes", "No"]\\n```', "no")
['Yes', 'No']
>>> row_key("Is this a CT?", "yes")
'2d47792b75bfae57'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.cli import UserError
from medvlthinker.inference.openai_client import API_BASE_ENV, API_KEY_ENV, ChatClient, EndpointError, RetryPolicy
from medvlthinker.staging import write_text

Completer = Callable[[list[dict[str, str]]], str]

MAX_TRIES = 5
DEFAULT_MODEL = "gpt-4o-2024-11-20"
"""The original's writer was GPT-4o (the 2024-11-20 version, an Azure deployment named gpt-4o-1120)."""

SYSTEM_PROMPT = "You write the answer options of closed medical questions."

# The original's prompt is not reproduced word for word (its cached options are reused instead, see
# docs/eval_set.md); this one states the same rules: a JSON list, Yes/No for yes-no answers, otherwise the
# alternatives the question names, in the order it names them, the answer among them.
OPTION_PROMPT = """Write the answer options of the closed question below, given its correct answer.

Reply with a JSON list of strings and nothing else. Keep the options' wording and the order in which the question \
mentions them. When the answer is yes or no (any casing), reply ["Yes", "No"]. Otherwise list the distinct \
alternatives the question and the answer mention; the answer must be one of them.

Examples:
Question: Is the lesion in the left lobe or the right lobe?
Answer: right lobe
Output: ["left lobe", "right lobe"]

Question: Does the scan show pleural effusion?
Answer: yes
Output: ["Yes", "No"]

Question: Is this an axial or a sagittal slice?
Answer: Axial
Output: ["axial", "sagittal"]

Question: {question}
Answer: {answer}
Output:"""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def row_key(question: str, answer: str) -> str:
    """The original's cache key of a row (and the ``hash`` of its eval row): sha256 of question + answer, 16 hex."""
    return hashlib.sha256(f"{question}{answer}".encode()).hexdigest()[:16]


def option_messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": OPTION_PROMPT.format(question=question, answer=answer)}]


def parse_reply(text: str | None, answer: str) -> list[str]:
    """The options in an LLM reply (a JSON list, optionally in a code fence); ValueError when the list is not
    usable: not a list of strings, fewer than two entries, or the answer (case-insensitive) not among them."""
    text = text or ""
    match = _FENCE.search(text)
    body = match.group(1).strip() if match else text.strip()
    try:
        options = json.loads(body)
    except ValueError:
        raise ValueError(f"reply is not JSON: {body[:80]!r}") from None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError(f"reply is not a JSON list of strings: {body[:80]!r}")
    if len(options) < 2:
        raise ValueError(f"reply has {len(options)} option(s), a closed question needs two or more: {options}")
    if answer.lower() not in [o.lower() for o in options]:
        raise ValueError(f"answer {answer!r} is not among the options {options}")
    return options


class OpenAIChat:
    """A completer on an OpenAI-compatible chat API, sent through the project's one client
    (:class:`~medvlthinker.inference.openai_client.ChatClient`: the key read from ``api_key_env`` when the first
    call is due and never stored, ``timeout`` per request in all, the retry policy). A bad key or model name, or an
    endpoint that does not answer as the chat API does, stops the build (:class:`EndpointError`)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, base_url: str | None = None, api_key_env: str = API_KEY_ENV,
                 max_retries: int = RetryPolicy.max_retries, timeout: float = 120.0,
                 temperature: float | None = None) -> None:
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.retry, self.timeout, self.temperature = RetryPolicy(max_retries=max_retries), timeout, temperature
        self._client: ChatClient | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the client; a missing key or package is a one-line error before any row is sent."""
        with self._lock:
            if self._client is None:
                # the writer's model may be a deployment name (Azure) that answers with the model's own name
                self._client = ChatClient(
                    self.model, base_url=self.base_url, api_key_env=self.api_key_env, timeout=self.timeout,
                    retry=self.retry, same_model_only=False,
                    key_hint=f"(and {API_BASE_ENV} or --api_base for another endpoint), or pass --options_cache "
                             "holding every row's options")

    def __call__(self, messages: list[dict[str, str]]) -> str:
        self.open()
        extra = {} if self.temperature is None else {"temperature": self.temperature}
        response = self._client.create(messages=messages, **extra)
        return response.choices[0].message.content or ""


@dataclass
class OptionResult:
    options: list[str] | None
    attempts: int = 0
    cached: bool = False
    errors: list[str] = field(default_factory=list)


class OptionCache:
    """``<dir>/<row_key>.json`` per row, written whole (a temporary file renamed into place)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str, question: str, answer: str) -> list[str] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            options = parse_reply(json.dumps(entry["options"]), answer)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(str(path), f"is not a usable options entry ({exc})",
                            fix="delete the file; the next run asks for that row's options again") from None
        if entry.get("question") != question or entry.get("answer") != answer:
            raise UserError(str(path), "belongs to another question or answer",
                            fix="delete the file; the next run asks for that row's options again")
        return options

    def put(self, key: str, question: str, answer: str, options: list[str], **meta: Any) -> None:
        entry = {"question": question, "answer": answer, "options": options, **meta}
        # worker threads may answer the same row at once: each writes its own temporary file
        write_text(self.path(key), json.dumps(entry, ensure_ascii=False), private=True)


def write_options(question: str, answer: str, complete: Completer, *, max_tries: int = MAX_TRIES) -> OptionResult:
    """Ask ``complete`` until its reply parses (:func:`parse_reply`), at most ``max_tries`` times. An exception of
    the completer (an API error after the client's retries) counts as a failed try, except an
    :class:`EndpointError` (a bad key or model, an endpoint that is not a chat API), which stops the build."""
    result = OptionResult(options=None)
    messages = option_messages(question, answer)
    while result.attempts < max_tries:
        result.attempts += 1
        try:
            result.options = parse_reply(complete(messages), answer)
            return result
        except EndpointError:
            raise
        except ValueError as exc:
            result.errors.append(str(exc))
        except Exception as exc:  # the API client's errors differ by provider; the row is reported, not lost
            result.errors.append(f"{type(exc).__name__}: {exc}")
    return result


def fill_options(rows: Iterable[tuple[str, str]], complete: Completer | None, cache_dir: str | os.PathLike, *,
                 workers: int = 8, max_tries: int = MAX_TRIES, model: str | None = None,
                 progress: bool = True) -> dict[str, OptionResult]:
    """``{row_key: OptionResult}`` for ``(question, answer)`` rows: from the cache, else written by ``complete``
    (``workers`` rows at a time) and cached when they succeed."""
    cache = OptionCache(cache_dir)
    results: dict[str, OptionResult] = {}
    missing: dict[str, tuple[str, str]] = {}
    for question, answer in rows:
        key = row_key(question, answer)
        if key in results or key in missing:
            continue
        options = cache.get(key, question, answer)
        if options is not None:
            results[key] = OptionResult(options=options, cached=True)
        else:
            missing[key] = (question, answer)
    if not missing:
        return results
    if complete is None:
        raise UserError(str(cache_dir), f"has no options for {len(missing)} row(s) and no option writer is set",
                        fix="pass an option writer (--option_model and an API key) or a complete --options_cache")
    if hasattr(complete, "open"):
        complete.open()

    def one(item):
        key, (question, answer) = item
        result = write_options(question, answer, complete, max_tries=max_tries)
        if result.options is not None:
            cache.put(key, question, answer, result.options, model=model, attempts=result.attempts)
        return key, result

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, result in tqdm(pool.map(one, missing.items()), total=len(missing), desc="writing options",
                                disable=not progress):
            results[key] = result
    return results
