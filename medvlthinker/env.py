"""Every environment variable the package reads, declared once: its name, its default and what it does.

Code reads a variable through :func:`get`, :func:`flag` or :func:`integer`, never through ``os.environ``; a name
that is not declared here is a ``KeyError``, so a new variable cannot be read before it has a line below.
docs/environment.md lists them (``python -m medvlthinker.env`` prints that table; tests/test_env.py checks the
doc, the reads in the package and the shell recipes' knobs against this module).

>>> declared("WORLD_SIZE").default
'1'
>>> get("NOT_A_DECLARED_VARIABLE")
Traceback (most recent call last):
KeyError: 'NOT_A_DECLARED_VARIABLE is not declared in medvlthinker/env.py; fix: add a Variable for it there'
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from medvlthinker.errors import UserError


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    """The value when the variable is unset; None: unset (the reader decides)."""
    purpose: str
    fallback: str | None = None
    """Another declared variable read when this one is unset (before ``default``)."""


VARIABLES: tuple[Variable, ...] = (
    Variable("MEDVLTHINKER_CACHE", None,
             "where the tiny random Qwen2.5-VL and other built test fixtures are cached; unset: `.cache/` at the "
             "repository root"),
    Variable("MEDVLTHINKER_KEEP_FREED_MEMORY", "1",
             "`0` leaves glibc's allocator as it is on CPU runs (`compat/cpu_allocator.py`: freed blocks are kept "
             "in the heap for the next step)"),
    Variable("MEDVLTHINKER_RESPONSE_LOGITS", "0",
             "`1` in verl's workers computes log-probabilities at the response tokens only (set by "
             "`configs/rl/overlays/response_logits.yaml`; `compat/verl_response_logits.py`)"),
    Variable("MEDVLTHINKER_VERL_POSITION_IDS_FIX", "1",
             "`0` switches off the fix of verl's 3-D position ids (`compat/verl_position_ids.py`)"),
    Variable("MEDVLTHINKER_VERL_TEXT_ONLY_FIX", "1",
             "`0` switches off the fix of verl's text-only batches (`compat/verl_text_only.py`)"),
    Variable("MEDVLTHINKER_VERL_CPU_DISABLE", "",
             "comma-separated CPU work-arounds not to install (`compat/verl_cpu/`: `platform`, `gloo_backend`, ...), "
             "to see the failure one prevents"),
    Variable("MEDVLTHINKER_COMPAT_VERBOSE", "0",
             "`1`: every process says on stderr which work-arounds it installed"),
    Variable("VERL_PLATFORM", "",
             "`cpu` turns on verl's CPU profile (set for every process by `configs/rl/overlays/cpu.yaml`)"),
    Variable("PREFLIGHT_ROWS", "64",
             "rows of the training data the RL preflight samples (read by `train/rl/train.sh`; the cluster check "
             "sets 4)"),
    Variable("OPENAI_API_KEY", None,
             "the API key of the `api` backend and of the eval set's option writer (the default of `--api_key_env`, "
             "which names another variable); read when the run starts, never written"),
    Variable("OPENAI_BASE_URL", None,
             "the OpenAI-compatible endpoint when `--api_base` is not given; unset: OpenAI's"),
    Variable("RAY_ADDRESS", None,
             "the Ray cluster `--ray` joins when `--ray_address` is not given (`ray job submit` sets it); unset: a "
             "local Ray instance"),
    Variable("CUDA_VISIBLE_DEVICES", None,
             "the GPUs the eval may use (each data-parallel rank sets its own slice); unset: every GPU torch sees"),
    Variable("WORLD_SIZE", "1",
             "processes of an SFT run (set by accelerate/torchrun); the gradient accumulation is derived from it"),
    Variable("RANK", None, "this SFT process's rank (set by accelerate/torchrun); rank 0 checks the images",
             fallback="LOCAL_RANK"),
    Variable("LOCAL_RANK", "0", "this SFT process's rank on its node, read where `RANK` is unset"),
)
"""Every variable the package reads, and those of the project's own that it sets for another process."""

REGISTRY: dict[str, Variable] = {variable.name: variable for variable in VARIABLES}


def declared(name: str) -> Variable:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"{name} is not declared in medvlthinker/env.py; fix: add a Variable for it there") from None


def get(name: str) -> str | None:
    """The variable's value, else its fallback's, else its declared default."""
    variable = declared(name)
    if name in os.environ:
        return os.environ[name]
    if variable.fallback is not None:
        return get(variable.fallback)
    return variable.default


def flag(name: str) -> bool:
    """A switch: on by default unless set to ``0``, or off by default unless set to ``1`` (spaces ignored)."""
    default = declared(name).default
    if default not in ("0", "1"):
        raise ValueError(f"{name} is not a switch (its default is {default!r}); fix: read it with env.get")
    value = (get(name) or "").strip()
    return value != "0" if default == "1" else value == "1"


def integer(name: str) -> int:
    """A whole number; another value is a one-line error naming the variable (a ``ValueError``, as ``int`` raises)."""
    value = get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"environment variable {name}", f"is {value!r}, not a whole number",
                        fix="set it to a whole number, or unset it") from None


def raw(name: str) -> str | None:
    """The value as set, None where unset (what a report of the settings in force shows), of a declared name."""
    declared(name)
    return os.environ.get(name)


def user_named(name: str) -> str | None:
    """A variable whose name the user chose (``--api_key_env``): read as it is, declared or not."""
    return os.environ.get(name)


def _cell(value: str | None) -> str:
    return "unset" if value is None else "empty" if value == "" else f"`{value}`"


def table() -> str:
    """The markdown table of docs/environment.md's section on the variables the package reads."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for v in VARIABLES:
        default = f"as `{v.fallback}`" if v.fallback else _cell(v.default)
        lines.append(f"| `{v.name}` | {default} | {v.purpose} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
