"""Software tests of ebmref.cli (options generated from dataclass configs) and of the config
machinery it rests on (ebmref.config.with_overrides, field_paths)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from ebmref.cli import add_config_arguments, config_error, overrides_from_args, parse_value
from ebmref.config import TrainConfig, field_paths, with_overrides


@dataclass
class _Inner:
    rate: float = 0.5
    box: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"inner.rate: must be > 0, got {self.rate!r}")


@dataclass
class _Outer:
    n_items: int = 3
    flag: bool = False
    names: list[str] = field(default_factory=lambda: ["a"])
    inner: _Inner = field(default_factory=_Inner)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    add_config_arguments(p, _Outer, aliases={"n_items": ["--n_items"]})
    return p


def test_options_are_dotted_kebab_case_with_aliases_and_absent_when_not_given():
    p = _parser()
    args = p.parse_args(["--n-items", "4", "--inner.box", "none", "--names", "x", "y"])
    assert overrides_from_args(args) == {"n_items": 4, "inner.box": None, "names": ["x", "y"]}
    assert overrides_from_args(p.parse_args(["--n_items", "5"])) == {"n_items": 5}
    assert overrides_from_args(p.parse_args([])) == {}
    cfg = with_overrides(_Outer(), overrides_from_args(p.parse_args(["--inner.rate", "2",
                                                                     "--flag", "yes"])))
    assert cfg.inner.rate == 2.0 and cfg.flag is True and _Outer().inner.rate == 0.5


@pytest.mark.parametrize("argv", [["--n-items", "abc"], ["--flag", "maybe"],
                                  ["--inner.box", "1"], ["--inner.rate", "1,2"]])
def test_malformed_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err  # the message names the option


def test_parse_value_by_type():
    assert parse_value(tuple[float, float] | None, "(0, 1)") == (0.0, 1.0)
    assert parse_value(float | None, "off") is None
    assert parse_value(int, "7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="integer"):
        parse_value(int, "2.5")


def test_overrides_validate_and_name_the_path():
    with pytest.raises(ValueError, match="inner.rate"):
        with_overrides(_Outer(), {"inner.rate": -1.0})
    with pytest.raises(ValueError, match="unknown field 'inner.nope'"):
        with_overrides(_Outer(), {"inner.nope": 1})
    assert field_paths(_Outer) == ["n_items", "flag", "names", "inner.rate", "inner.box"]


def test_config_errors_are_worded_as_options():
    try:
        with_overrides(TrainConfig(), {"sampler.step_size": -1.0})
    except ValueError as err:
        assert config_error(err, TrainConfig).startswith("--sampler.step-size: must be")
    other = ValueError("resume: needs out_dir")  # not a field: left as it is
    assert config_error(other, TrainConfig) == "resume: needs out_dir"
