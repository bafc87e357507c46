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
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import click

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
