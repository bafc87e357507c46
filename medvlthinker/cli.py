"""Stage scripts' entry point: a mistake the user can fix ends as one line, exit code 1, no traceback.

A script declares its command with :func:`command` instead of ``click.command`` (a command with subcommands uses
:class:`Group`; a script that parses its own arguments wraps its main in :func:`entry_point`). It gains ``--debug``
(show the traceback instead), and any :data:`USER_ERRORS` raised inside, or a command-line usage error, is printed
to stderr as ``error: <file/row/key>: <problem>; fix: <what to do>`` with exit code 1.

The package's own errors all derive from :class:`UserError` (:mod:`medvlthinker.errors`) and already say where
and what; an ``OSError`` names its file. Library errors on bad input are translated where the library is called,
into one of these.

>>> str(UserError("data/x.jsonl", "the file is empty", fix="point --results at the run's eval_results.jsonl"))
"data/x.jsonl: the file is empty; fix: point --results at the run's eval_results.jsonl"

Options derived from a config dataclass (:func:`option`, :func:`cli_options`, :func:`add_options`): each field is
declared once, with its help. A field's ``metadata`` carries ``help`` (shown by ``--help``) and, where the flag
needs more than its type says, ``click`` (extra ``click.option`` keyword arguments: a ``click.Choice``,
``multiple``, ...); ``cli=False`` keeps a field off the command line. The flag is the field's name in the project's style, ``--dataset_name``.

>>> import dataclasses
>>> @dataclasses.dataclass
... class Demo:
...     path: str = dataclasses.field(metadata={"help": "where"})
...     size: int | None = dataclasses.field(default=None, metadata={"help": "how many"})
...     quiet: bool = dataclasses.field(default=False, metadata={"help": "say less"})
>>> [(o.name, o.required, o.is_flag, o.help) for o in cli_options(Demo)]
[('path', True, False, 'where'), ('size', False, False, 'how many'), ('quiet', False, True, 'say less')]
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.core import ParameterSource

from medvlthinker.errors import UserError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, UserError)
"""Errors that end as one line. Bugs raise other types (TypeError, KeyError, AttributeError, ...) and keep their
traceback; ``--debug`` shows the traceback of these too."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (an ``OSError`` without its own text names its file)."""
    text = str(exc)
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    if isinstance(exc, OSError) and isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError)):
        if "fix:" not in text:
            text += "; fix: check the path and its permissions"
    return " ".join(text.split()) or type(exc).__name__


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _OneLineErrors:
    """The ``main`` of :class:`Command` and :class:`Group`: usage and user errors end as one line, exit code 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            fail("interrupted")
        except click.ClickException as exc:
            # a script run as ``python data_process/x.py`` is named by its file, not by its function (``main``)
            name = prog_name or (os.path.basename(sys.argv[0]) if args is None and sys.argv[0] else self.name)
            message = " ".join(exc.format_message().split())
            fix = "" if "fix:" in message else f"; fix: see {name} --help"
            fail(f"{message}{fix}")
        except USER_ERRORS as exc:
            if "--debug" in argv:
                raise
            fail(one_line(exc))


class Command(_OneLineErrors, click.Command):
    """A ``click.Command`` whose usage errors and user errors end as one line with exit code 1."""


class Group(_OneLineErrors, click.Group):
    """A ``click.Group`` (a script with subcommands) whose errors end as one line with exit code 1."""


def command(*args: Any, **kwargs: Any):
    """``click.command`` with ``--debug`` and one-line errors (see the module docstring)."""
    kwargs.setdefault("cls", Command)

    def decorate(func):
        @functools.wraps(func)
        def callback(*a, debug: bool = False, **kw):
            return func(*a, **kw)

        callback = click.option("--debug", is_flag=True, help="Show the full traceback of an error.")(callback)
        return click.command(*args, **kwargs)(callback)

    return decorate


def entry_point(func):
    """The one-line errors of :func:`command` for a script that parses its own arguments (no click command of
    its own): ``func(argv)`` runs with ``sys.argv[1:]`` by default, and ``--debug`` among them shows the traceback
    instead (it is removed before ``func`` sees them)."""

    @functools.wraps(func)
    def run(argv: list[str] | None = None) -> Any:
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        try:
            return func([a for a in argv if a != "--debug"])
        except USER_ERRORS as exc:
            if debug:
                raise
            fail(one_line(exc))

    return run


# ------------------------------------------------------------------------------------ options from dataclasses
def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           cli: bool = True, cli_default: Any = dataclasses.MISSING, **click_kwargs: Any) -> Any:
    """A dataclass ``field`` carrying its help text (and any extra ``click.option`` arguments; ``cli_default`` is the
    flag's default where the command line spells the value differently, e.g. JSON text for a mapping)."""
    if cli_default is not dataclasses.MISSING:
        click_kwargs["default"] = cli_default
    metadata = {"help": help, "cli": cli, "click": click_kwargs}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def copy_field(cls: type, name: str) -> Any:
    """Field ``name`` of dataclass ``cls`` (its default and help) for another dataclass: the fact stays in ``cls``."""
    source = {f.name: f for f in dataclasses.fields(cls)}[name]
    if source.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=source.default_factory, metadata=source.metadata)
    return dataclasses.field(default=source.default, metadata=source.metadata)


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type of an annotation, and whether it is optional (``X | None``)."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        annotation = typing.get_args(annotation)[0]
    elif origin is dict:
        annotation = str  # given as JSON text; the command decodes it
    return annotation, optional


def cli_options(cls: type, *, exclude: Iterable[str] = (),
                callbacks: dict[str, Callable] | None = None) -> list[click.Option]:
    """One ``click.Option`` per field of ``cls`` (fields with ``cli=False`` or in ``exclude`` left out)."""
    hints = typing.get_type_hints(cls)
    exclude, callbacks = set(exclude), callbacks or {}
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        annotation, _ = _click_type(hints[f.name])
        kwargs: dict[str, Any] = {"help": f.metadata.get("help") or None}
        if annotation is bool:
            kwargs["is_flag"] = True
        else:
            kwargs["type"] = annotation
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        if f.name in callbacks:
            kwargs["callback"] = callbacks[f.name]
        kwargs.update(f.metadata.get("click", {}))
        out.append(click.Option([f"--{f.name}"], **kwargs))
    return out


def add_options(options: list[click.Option]):
    """A decorator adding ``options`` to a click command in their order (what stacked ``@click.option`` do)."""

    def decorate(func):
        params = getattr(func, "__click_params__", [])
        # click applies stacked decorators bottom-up and reverses the list once: append in reverse to keep order
        params.extend(reversed(options))
        func.__click_params__ = params
        return func

    return decorate


def preset_option(presets: dict[str, Any], names: Iterable[str], *,
                  help: str) -> tuple[click.Option, dict[str, Callable]]:
    """``--preset NAME`` setting the options ``names`` to the attributes of ``presets[NAME]``, and the callbacks
    those options need (pass them to :func:`cli_options`).

    A flag the user typed wins over the preset, and the preset wins over the field's default; the resolved values
    are the command's parameters, so nothing downstream knows a preset was used.
    """
    key = f"preset:{id(presets)}"

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.meta[key] = presets[value]

    def from_preset(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        preset = ctx.meta.get(key)
        if preset is None or ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
            return value
        return getattr(preset, param.name)

    # eager: click processes it before the options whose defaults it replaces
    option_ = click.Option(["--preset"], type=click.Choice(list(presets)), default=None, is_eager=True,
                           expose_value=False, callback=remember, help=help)
    return option_, {name: from_preset for name in names}
