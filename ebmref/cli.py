"""Command-line options generated from dataclass configs: one flag style for every CLI here.

Each leaf field becomes ``--<prefix><path>`` in kebab-case: ``--sampler.n-steps`` for
``TrainConfig.sampler.n_steps``, ``--model.arch``, ``--grid-points-2d``. An absent option
leaves the field to the preset or default (``argparse.SUPPRESS``), so ``--sampler.noise none``
can set a ``None``. Values are parsed from the field's type: numbers, ``true``/``false`` for
bools, ``none`` for an optional value, ``LOW,HIGH`` for pairs, several words for lists.
Earlier spellings (``--n_steps``) are accepted as aliases. :func:`config_error` turns a config's
``ValueError`` ("sampler.step_size: ...") into the option's words ("--sampler.step-size: ...").
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ebmref.checkpoint import CheckpointError
from ebmref.config import field_paths, nested_type

_DEST = "cfg:"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line (``prog: error: ... (see --help)``)
    and exit status 2, like every error of the project's commands."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag(path: str) -> str:
    """``sampler.n_steps`` → ``--sampler.n-steps``."""
    return "--" + path.replace("_", "-")


def parse_value(hint: Any, text: str) -> Any:
    """Parse ``text`` as a value of the type ``hint`` (resolved annotation of a field)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null", "off"):
            return None
        return parse_value(next(a for a in args if a is not type(None)), text)
    if origin is tuple:
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        if len(parts) != len(args):
            raise argparse.ArgumentTypeError(
                f"expected {len(args)} comma-separated values like 0,1, got {text!r}")
        return tuple(parse_value(a, p) for a, p in zip(args, parts))
    if hint is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if hint is int else 'a number'}, got {text!r}") from None
    return text


def type_words(hint: Any) -> str:
    """How a value of ``hint`` is written on the command line (metavar of help texts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{type_words(inner[0])}|none"
    if origin is tuple:
        return ",".join(type_words(a) for a in args)
    if origin is list:
        return type_words(args[0])
    return {bool: "true|false", int: "INT", float: "FLOAT", str: "TEXT"}.get(hint, str(hint))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, prefix: str = "",
                         aliases: Mapping[str, Sequence[str]] | None = None,
                         title: str | None = None, skip: Sequence[str] = ()) -> None:
    """One option per leaf field of the dataclass ``cls`` (nested dataclass fields recurse,
    one argument group each). ``aliases``: {dotted path: extra option strings}; ``skip``:
    paths that get no option."""
    group = parser.add_argument_group(title or f"{cls.__name__} ({cls.__module__})")
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if path in skip:
            continue
        sub = nested_type(f)
        if sub is not None:
            doc = (sub.__doc__ or "").strip().splitlines()[0].rstrip(".")
            add_config_arguments(parser, sub, prefix=path + ".", aliases=aliases,
                                 title=f"{path}: {doc}")
            continue
        hint = hints[f.name]
        names = [flag(path), *[a for a in (aliases or {}).get(path, ()) if a != flag(path)]]
        kwargs: dict[str, Any] = {"dest": _DEST + path, "default": argparse.SUPPRESS,
                                  "help": f"default {getattr(defaults, f.name)!r}"}
        if typing.get_origin(hint) is list:
            item = typing.get_args(hint)[0]
            kwargs.update(nargs="+", type=lambda s, h=item: parse_value(h, s),
                          metavar=type_words(item))
        else:
            kwargs.update(type=lambda s, h=hint: parse_value(h, s), metavar=type_words(hint))
        group.add_argument(*names, **kwargs)


def overrides_from_args(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of the config options given on the command line whose path starts
    with ``prefix`` (the prefix is removed)."""
    out = {}
    for dest, value in vars(args).items():
        if dest.startswith(_DEST + prefix):
            out[dest[len(_DEST) + len(prefix):]] = value
    return out


def config_error(err: Exception, cls: type, prefix: str = "") -> str:
    """A ``ValueError`` of the config ``cls`` in the command line's words: a leading field path
    (``sampler.step_size:``) becomes its option (``--sampler.step-size:``)."""
    return option_words(str(err), [(cls, prefix)])


def option_words(text: str, configs: Sequence[tuple[type, str]],
                 names: Mapping[str, str] | None = None) -> str:
    """``text`` with a leading field path of one of ``configs`` ((dataclass, option prefix)
    pairs), or a library argument in ``names`` ({argument: option}), replaced by its option."""
    m = re.match(r"([A-Za-z_][\w.]*): ", text)
    if m is None:
        return text
    if names and m.group(1) in names:
        return names[m.group(1)] + text[len(m.group(1)):]
    for cls, prefix in configs:
        if m.group(1) in field_paths(cls):
            return flag(prefix + m.group(1)) + text[len(m.group(1)):]
    return text


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")


def guarded(prog: str, body: Callable[[], int], *, debug: bool = False,
            configs: Sequence[tuple[type, str]] = (),
            names: Mapping[str, str] | None = None) -> int:
    """Run a command's ``body``; a failure the user can act on becomes one line on stderr:
    bad input (``ValueError``: a config value, a run directory, a data file's format) exits 2,
    naming the option when a config field is at fault; a failure while running (divergence, a
    busy or corrupted run directory, a file that cannot be read or written) exits 1.
    ``configs``/``names`` word the message as options (:func:`option_words`). With ``debug``
    the traceback shows instead."""
    if debug:
        return body()
    runtime = (RuntimeError, OSError, CheckpointError)
    try:
        return body()
    except runtime as err:
        print(f"{prog}: error: {option_words(_one_line(err), configs, names)}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"{prog}: error: {option_words(_one_line(err), configs, names)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
