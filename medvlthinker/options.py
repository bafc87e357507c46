"""Command-line options derived from a config dataclass: each field is declared once, with its help.

A field's ``metadata`` carries ``help`` (shown by ``--help``) and, where the flag needs more than its type says,
``click`` (extra ``click.option`` keyword arguments: a ``click.Choice``, ``multiple``, ...); ``cli=False`` keeps a
field off the command line. The flag is the field's name in the project's style, ``--dataset_name``.

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
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.core import ParameterSource


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
