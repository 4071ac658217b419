"""How ebmref.cli reads and words values: parse_value, the one parser behind every generated
option — each spelling it accepts for a bool (1/true/yes/on, 0/false/no/off, any case) and for
``None`` of an optional value (none/null/off), and the exact words of its errors, also as the
one-line usage error of the project's ArgumentParser; type_words, the metavar of each type;
guarded, a command's one-line error with a library argument worded as its option."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from ebmref.cli import ArgumentParser, add_config_arguments, guarded, parse_value, type_words


@pytest.mark.parametrize("text", ["1", "true", "True", "TRUE", " yes ", "Yes", "on", "ON"])
def test_true_spellings(text):
    assert parse_value(bool, text) is True


@pytest.mark.parametrize("text", ["0", "false", "False", "FALSE", "no", "NO", "off", "Off"])
def test_false_spellings(text):
    assert parse_value(bool, text) is False


@pytest.mark.parametrize("text", ["none", "None", "null", "NULL", "off", " OFF "])
def test_none_spellings_of_an_optional_value(text):
    assert parse_value(float | None, text) is None
    assert parse_value(tuple[float, float] | None, text) is None


def test_optional_values_otherwise_parse_as_their_type():
    assert parse_value(int | None, "3") == 3
    assert parse_value(bool | None, "yes") is True
    assert parse_value(tuple[float, float] | None, "-1,2.5") == (-1.0, 2.5)


@pytest.mark.parametrize("hint,text,message", [
    (bool, "maybe", "expected true or false, got 'maybe'"),
    (int, "2.5", "expected an integer, got '2.5'"),
    (float, "abc", "expected a number, got 'abc'"),
    (float | None, "abc", "expected a number, got 'abc'"),
    (tuple[float, float], "1", "expected 2 comma-separated values like 0,1, got '1'"),
    (tuple[float, float, float], "1,2", "expected 3 comma-separated values like 0,1, got '1,2'"),
])
def test_error_messages_are_exact(hint, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_value(hint, text)
    assert str(info.value) == message


@dataclass
class _Opts:
    flag: bool = False
    box: tuple[float, float] | None = (0.0, 1.0)


def test_bad_values_are_one_line_usage_errors(capsys):
    """Through a generated option: exit status 2 and ``prog: error: argument --opt: <message>
    (see --help)`` on one line."""
    parser = ArgumentParser(prog="t")
    add_config_arguments(parser, _Opts)
    for argv, message in ((["--flag", "maybe"], "expected true or false, got 'maybe'"),
                          (["--box", "1"], ("expected 2 comma-separated values like 0,1, "
                                            "got '1'"))):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2
        assert capsys.readouterr().err == (f"t: error: argument {argv[0]}: {message} "
                                           "(see --help)\n")


@pytest.mark.parametrize("hint,words", [
    (bool, "true|false"), (int, "INT"), (float, "FLOAT"), (str, "TEXT"),
    (float | None, "FLOAT|none"), (int | None, "INT|none"), (tuple[float, float], "FLOAT,FLOAT"),
    (tuple[float, float] | None, "FLOAT,FLOAT|none"), (list[int], "INT"), (list[str], "TEXT"),
])
def test_type_words(hint, words):
    """The metavar of an option of type ``hint`` (what --help shows a user to type)."""
    assert type_words(hint) == words


@pytest.mark.parametrize("exc,code", [(RuntimeError, 1), (ValueError, 2)])
def test_guarded_words_library_arguments_as_options(exc, code, capsys):
    """A failure while running (exit 1) or bad input (exit 2): one line ``prog: error: ...``
    whose leading library argument (``n_chains:``) is replaced by its option from ``names``."""

    def body():
        raise exc("n_chains: must be positive, got 0\nmore detail")

    assert guarded("prog", body, names={"n_chains": "--chains"}) == code
    assert capsys.readouterr().err == "prog: error: --chains: must be positive, got 0\n"
