"""Command-line flags derived from the config definition (one source for both)."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any

import click

from unfork import config as C


def config_options(section: str, *names: str, prefix: str = "") -> Callable:
    """Add one ``--flag`` per config field; the flag's default is ``None`` (not given).

    The command receives them as keyword arguments named ``<prefix><field>``;
    pass them to :func:`collect` to build the overrides for ``load_config``.
    """
    fields = {f.name: f for f in dataclasses.fields(C._SECTION_TYPES[section])}

    def decorate(func: Callable) -> Callable:
        for name in reversed(names or tuple(fields)):
            f = fields[name]
            typ = C.field_type(section, name)
            choices = f.metadata.get("choices")
            help_text = f"{f.metadata.get('help', '')} [config: {section}.{name}]"
            flag = "--" + (prefix + name).replace("_", "-")
            kwargs: dict[str, Any] = {"default": None, "help": help_text, "show_default": False}
            if typ is bool:
                flag = f"{flag}/--no-{(prefix + name).replace('_', '-')}"
            elif typing.get_origin(typ) is list:
                kwargs["multiple"] = True
                kwargs["default"] = ()
            elif choices:
                kwargs["type"] = click.Choice(choices)
            else:
                kwargs["type"] = {int: int, float: float}.get(typ, str)
            func = click.option(flag, prefix + name, **kwargs)(func)
        return func

    return decorate


def collect(section: str, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Overrides for ``load_config`` from the flags a command received."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(C._SECTION_TYPES[section]):
        value = values.get(prefix + f.name)
        if value is None or value == ():
            continue
        out[f"{section}.{f.name}"] = list(value) if isinstance(value, tuple) else value
    return out


def ilab_alias(ilab_flag: str, kwarg: str, our_flag: str, *, type: Any = str,  # noqa: A002
               convert: Callable[[Any], Any] | None = None, meaning: str = "") -> Callable:
    """A hidden flag under InstructLab's name that fills our ``kwarg`` (flag ``our_flag``) and says so.

    ``convert`` turns ilab's value into ours where the meaning differs; ``meaning`` explains it in the notice.
    """
    dest = "ilab_" + ilab_flag.lstrip("-").replace("-", "_")

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(dest)
            if value is not None:
                if kwargs.get(kwarg) not in (None, ()):
                    raise click.UsageError(f"{ilab_flag} is ilab's name for {our_flag}: give only one of them")
                kwargs[kwarg] = convert(value) if convert else value
                click.echo(f"note: {ilab_flag} {value} (ilab) read as {our_flag} {kwargs[kwarg]}{meaning}",
                           err=True)
            return func(*args, **kwargs)

        return click.option(ilab_flag, dest, type=type, default=None, hidden=True,
                            help=f"InstructLab's name for {our_flag}.")(wrapper)

    return decorate


ilab_model_path = ilab_alias("--model-path", "model", "--model")
