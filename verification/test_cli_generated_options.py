"""ebmref.cli's generated options beyond the basics of test_cli.py: list fields parse each
item as the list's item type, a field after a nested group still gets its option, aliases
reach nested paths and an alias equal to the option itself is dropped, ``overrides_from_args``
strips a prefix, ``option_words`` / ``config_error`` with a prefix and an upper-case argument
name, ``--debug``, and ``guarded``'s exit status for each error class, its first-line message
and its pass-through of the body's status (and of the exception under ``debug``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ebmref.checkpoint import CheckpointError
from ebmref.cli import (
    ArgumentParser,
    add_config_arguments,
    add_debug_argument,
    config_error,
    guarded,
    option_words,
    overrides_from_args,
    type_words,
)
from ebmref.config import TrainConfig


@dataclass
class _Inner:
    """Knobs of the inner part, model X.

    A second line that the group title leaves out.
    """

    rate: float = 0.5
    steps: list[int] = field(default_factory=lambda: [1])


@dataclass
class _Cfg:
    counts: list[int] = field(default_factory=lambda: [1, 2])
    scales: list[float] = field(default_factory=lambda: [0.5])
    inner: _Inner = field(default_factory=_Inner)
    last_one: int = 3  # a field after the nested group


def _parse(argv, **kwargs):
    parser = ArgumentParser(prog="t")
    add_config_arguments(parser, _Cfg, **kwargs)
    return overrides_from_args(parser.parse_args(argv))


def test_list_items_parse_as_the_item_type():
    """``--counts 1 2`` gives the ints [1, 2], ``--scales`` floats, also inside a group."""
    got = _parse(["--counts", "1", "2", "--scales", "0.25", "3", "--inner.steps", "4"])
    assert got == {"counts": [1, 2], "scales": [0.25, 3.0], "inner.steps": [4]}
    assert [type(v) for v in got["counts"]] == [int, int]
    assert [type(v) for v in got["scales"]] == [float, float]


def test_nested_groups_are_titled_by_path_and_first_docstring_line():
    """--help shows each nested group under "<path>: <first line of its docstring>" without the
    final period; the top group under its class and module."""
    parser = ArgumentParser(prog="t")
    add_config_arguments(parser, _Cfg)
    lines = parser.format_help().splitlines()
    assert "inner: Knobs of the inner part, model X:" in lines
    assert f"_Cfg ({__name__}):" in lines


def test_a_bad_list_item_is_a_usage_error(capsys):
    """An item that is not of the item type: exit 2, the option and the parser's words."""
    with pytest.raises(SystemExit) as info:
        _parse(["--counts", "1", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("t: error: argument --counts: expected an integer, got "
                                       "'x' (see --help)\n")


def test_fields_after_a_nested_group_get_options():
    """The nested group does not end the option list: ``--last-one`` exists after it."""
    assert _parse(["--last-one", "9", "--inner.rate", "2"]) == {"last_one": 9, "inner.rate": 2.0}


def test_aliases_reach_nested_paths_and_skip_the_option_itself():
    """Aliases apply inside nested groups; an alias equal to the generated option is dropped
    (argparse would refuse it as a conflict)."""
    aliases = {"inner.rate": ["--rate", "--inner.rate"], "last_one": ["--last-one", "--last"]}
    assert _parse(["--rate", "4", "--last", "1"], aliases=aliases) == {"inner.rate": 4.0,
                                                                      "last_one": 1}
    assert _parse(["--inner.rate", "5"], aliases=aliases) == {"inner.rate": 5.0}


def test_skip_leaves_a_field_without_option(capsys):
    """``skip``: the path gets no option (argparse refuses it as unrecognised)."""
    with pytest.raises(SystemExit):
        _parse(["--last-one", "1"], skip=("last_one",))
    assert "unrecognized arguments: --last-one 1" in capsys.readouterr().err


def test_overrides_from_args_strips_the_prefix():
    """Only the options under ``prefix``, keyed by the rest of their path."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _Cfg)
    args = parser.parse_args(["--inner.rate", "2", "--last-one", "4", "--inner.steps", "1"])
    assert overrides_from_args(args, "inner.") == {"rate": 2.0, "steps": [1]}
    assert overrides_from_args(args) == {"inner.rate": 2.0, "last_one": 4, "inner.steps": [1]}


def test_option_words_prefix_and_names():
    """A config path becomes ``--<prefix><path>`` in kebab case; a library argument in
    ``names`` its option, also when it starts with a capital; other text is unchanged."""
    configs = [(_Cfg, "model.")]
    assert option_words("inner.rate: bad", configs) == "--model.inner.rate: bad"
    assert option_words("last_one: bad", configs) == "--model.last-one: bad"
    assert option_words("T: must be > 0", configs, {"T": "--steps"}) == "--steps: must be > 0"
    assert option_words("nope: bad", configs, {"T": "--steps"}) == "nope: bad"
    assert option_words("no colon here", configs) == "no colon here"
    err = ValueError("sampler.step_size: must be a finite number > 0, got -1.0")
    assert config_error(err, TrainConfig, "train.") == (
        "--train.sampler.step-size: must be a finite number > 0, got -1.0")


def test_type_words_of_another_type_is_its_name():
    """A type without a word of its own (a path) is shown as Python names it."""
    assert type_words(Path) == str(Path)
    assert type_words(list[Path]) == str(Path)


def test_debug_option():
    """``--debug`` is a switch, off unless given."""
    parser = argparse.ArgumentParser()
    add_debug_argument(parser)
    assert parser.parse_args([]).debug is False
    assert parser.parse_args(["--debug"]).debug is True


@pytest.mark.parametrize("exc,code", [
    (RuntimeError("diverged"), 1), (OSError(28, "No space left on device"), 1),
    (CheckpointError("corrupted"), 1),  # a ValueError, yet a failure while running
    (ValueError("bad input"), 2),
])
def test_guarded_exit_status_by_error_class(exc, code, capsys):
    """Runtime failures (RuntimeError, OSError, CheckpointError) exit 1; bad input
    (ValueError) exits 2; one line ``prog: error: <message>`` on stderr, nothing on stdout."""

    def body():
        raise exc

    assert guarded("prog", body) == code
    out = capsys.readouterr()
    assert out.err == f"prog: error: {exc}\n" and out.out == ""


@pytest.mark.parametrize("exc", [RuntimeError, ValueError])
def test_guarded_message_is_the_first_line_or_the_class(exc, capsys):
    """A multi-line message keeps its first non-empty line, worded as options through
    ``configs``; an empty message shows the exception's class."""

    def body():
        raise exc("\nsampler.n_steps: must be an integer\ndetails")

    guarded("p", body, configs=[(TrainConfig, "")])
    assert capsys.readouterr().err == "p: error: --sampler.n-steps: must be an integer\n"

    def empty():
        raise exc()

    guarded("p", empty)
    assert capsys.readouterr().err == f"p: error: {exc.__name__}\n"


def test_guarded_passes_the_status_and_debug_the_traceback():
    """The body's own status is returned; with ``debug`` its exception propagates."""
    assert guarded("p", lambda: 0) == 0
    assert guarded("p", lambda: 5, debug=True) == 5

    def body():
        raise ValueError("x: bad")

    with pytest.raises(ValueError, match=r"^x: bad$"):
        guarded("p", body, debug=True)
