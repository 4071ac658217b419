"""The command line of ebmref.conformance (``python -m ebmref.conformance``), in process and
fast: option parsing (types, choices, defaults, the required MODULE:FUNCTION), refusals as one
line naming the option with exit status 2, the import of MODULE:FUNCTION (dotted attributes,
the current directory searched first), the wiring of each option to its check, and a user
function's own error reported as a failed check (exit 1) naming the function.

The KL-loss and entropy checks take seconds (pilots, many batches), so their wiring is checked
with a stand-in for the check that records its arguments; the checks themselves are tested in
test_conformance.py.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from ebmref.conformance import Report, Row, UnderpoweredError
from ebmref.conformance.__main__ import build_parser, load_function, main, user_code
from ebmref.stats import ALPHA

cli = importlib.import_module("ebmref.conformance.__main__")
PROG = "python -m ebmref.conformance"

HELPERS = '''
CONSTANT = 3


def kl(energy, x_diff):
    return ("kl", energy, x_diff)


def entropy(x):
    return ("entropy", x)


def raises(*args):
    raise TypeError("my bug")


class Holder:
    @staticmethod
    def method(x):
        return ("method", x)
'''


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """A module of user functions on sys.path; its name."""
    name = f"conformance_cli_helpers_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def run_main(argv, capsys):
    """(exit status, stdout, stderr lines) of main(argv), argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("option, dest, text, value", [
    ("--noise", "noise", "0.25", 0.25),
    ("--step-size", "step_size", "0.3", 0.3),
    ("--n-steps", "n_steps", "4", 4),
    ("--scale", "scale", "0.5", 0.5),
    ("--rel-error", "rel_error", "0.15", 0.15),
    ("--min-moved", "min_moved", "0.2", 0.2),
    ("--entropy-weight", "entropy_weight", "0.5", 0.5),
    ("--alpha", "alpha", "1e-3", 1e-3),
    ("--seed", "seed", "7", 7),
])
def test_numeric_options_are_parsed_as_numbers(option, dest, text, value, capsys):
    """Each numeric option arrives as a float (int for --n-steps, --seed), and text that is not
    a number is refused by the parser in one line naming the option, exit status 2."""
    args = build_parser().parse_args(["--sampler", "m:f", option, text])
    assert getattr(args, dest) == value and type(getattr(args, dest)) is type(value)
    kind = "int" if isinstance(value, int) else "float"
    code, _, err = run_main(["--sampler", "m:f", option, "x1"], capsys)
    assert code == 2
    assert err == [f"{PROG}: error: argument {option}: invalid {kind} value: 'x1' (see --help)"]


def test_defaults_and_multi_valued_targets():
    """Defaults: α = ebmref.stats.ALPHA (1e-6), seed 0, no --debug, every per-check option
    unset (so the check's own default applies); --targets takes one or more names."""
    args = build_parser().parse_args(["--entropy", "m:f"])
    assert args.alpha == ALPHA == 1e-6 and args.seed == 0 and args.debug is False
    for dest in ("kind", "noise", "targets", "step_size", "n_steps", "scale", "rel_error",
                 "min_moved", "sign", "entropy_weight", "sampler", "kl_loss"):
        assert getattr(args, dest) is None
    args = build_parser().parse_args(["--sampler", "m:f", "--targets", "gauss2d", "gauss20d"])
    assert args.targets == ["gauss2d", "gauss20d"]
    args = build_parser().parse_args(["--sampler", "m:f", "--targets", "double_well"])
    assert args.targets == ["double_well"]


@pytest.mark.parametrize("option, good, bad", [("--kind", "decoupled", "mala"),
                                               ("--sign", "du2020", "plus")])
def test_choice_options(option, good, bad, capsys):
    """--kind and --sign accept only their documented values."""
    args = build_parser().parse_args(["--sampler", "m:f", option, good])
    assert getattr(args, option[2:]) == good
    code, _, err = run_main(["--sampler", "m:f", option, bad], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"{PROG}: error: argument {option}: invalid choice: '{bad}'")


def test_one_function_to_check_is_required(capsys):
    """Without --sampler, --kl-loss or --entropy the parser refuses, exit status 2."""
    code, _, err = run_main([], capsys)
    assert code == 2
    line = f"{PROG}: error: one of the arguments --sampler --kl-loss --entropy is required"
    assert err == [f"{line} (see --help)"]


def test_help_keeps_the_examples_verbatim(monkeypatch):
    """--help prints the module docstring's example command lines as written (one per line,
    indented), not re-wrapped into a paragraph."""
    monkeypatch.setenv("COLUMNS", "100")
    text = build_parser().format_help()
    assert text.startswith(f"usage: {PROG} ")
    for example in ("--sampler mysamplers:ula --kind ula",
                    "--kl-loss mylosses:kl --sign cd --entropy-weight 1",
                    "--entropy myestimators:knn"):
        assert f"\n    {PROG} {example}\n" in text


# ---------------------------------------------------------------- MODULE:FUNCTION


@pytest.mark.parametrize("spec", ["nocolon", ":f", "mod:"])
def test_malformed_spec_is_refused_naming_the_option(spec):
    with pytest.raises(ValueError, match=rf"^--entropy: expected MODULE:FUNCTION, got '{spec}'$"):
        load_function(spec, "--entropy")


def test_dotted_attribute_and_errors(helper):
    """FUNCTION may be dotted (Class.method); the first colon separates MODULE; a missing
    attribute and an object that is not callable are refused, naming the option."""
    assert load_function(f"{helper}:Holder.method", "--sampler")(1) == ("method", 1)
    with pytest.raises(ValueError, match=rf"^--sampler: '{helper}' has no attribute 'kl:x'$"):
        load_function(f"{helper}:kl:x", "--sampler")
    with pytest.raises(ValueError,
                       match=rf"^--kl-loss: {helper}:CONSTANT is not callable \(int\)$"):
        load_function(f"{helper}:CONSTANT", "--kl-loss")


def _path_without(*entries):
    return [p for p in sys.path if p not in entries]


def test_current_directory_is_searched_first(tmp_path, monkeypatch):
    """A module in the current directory wins over one of the same name elsewhere on
    sys.path, when neither the directory nor '' is on sys.path yet."""
    here, other = tmp_path / "here", tmp_path / "other"
    name = f"conformance_shadow_{abs(hash(str(tmp_path))) % 10**8}"
    for folder in (here, other):
        folder.mkdir()
        (folder / f"{name}.py").write_text(f"def f():\n    return {folder.name!r}\n")
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [str(other)] + _path_without("", str(here)))
    try:
        assert load_function(f"{name}:f", "--sampler")() == "here"
        assert sys.path[0] == os.getcwd()
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("entry", ["", "cwd"])
def test_sys_path_is_left_alone_when_it_already_has_the_directory(entry, tmp_path, monkeypatch):
    """'' or the current directory already on sys.path: nothing is added."""
    name = f"conformance_here_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text("def f():\n    return 5\n")
    monkeypatch.chdir(tmp_path)
    first = "" if entry == "" else os.getcwd()
    monkeypatch.setattr(sys, "path", [first] + _path_without("", os.getcwd()))
    before = list(sys.path)
    try:
        assert load_function(f"{name}:f", "--sampler")() == 5
        assert sys.path == before
    finally:
        sys.modules.pop(name, None)


def test_user_code_passes_arguments_and_names_the_function():
    """user_code forwards positional and keyword arguments; the function's own exception
    becomes a RuntimeError naming it."""
    wrapped = user_code(lambda a, b=0: a + 10 * b, "m:f")
    assert wrapped(1, b=2) == 21
    with pytest.raises(RuntimeError, match=r"^m:f raised ZeroDivisionError: division by zero$"):
        user_code(lambda: 1 / 0, "m:f")()


# ---------------------------------------------------------------- wiring to the checks


def _spy(monkeypatch, check, calls, effect=None):
    """Replace the command line's ``check`` with one that records its call, calls the user's
    function once and returns a one-row passing report (or raises ``effect``)."""
    def fake(fn, **kwargs):
        calls.append((fn(2, 3) if check == "check_kl_loss" else fn(4), kwargs))
        if effect is not None:
            raise effect
        return Report(f"fake {check}", kwargs["alpha"], kwargs["seed"],
                      [Row("t", "s", 0.0, 1.0, kwargs["alpha"], "e")])
    monkeypatch.setattr(cli, check, fake)


def test_kl_loss_options_reach_check_kl_loss(helper, monkeypatch, capsys):
    calls = []
    _spy(monkeypatch, "check_kl_loss", calls)
    argv = ["--kl-loss", f"{helper}:kl", "--sign", "du2020", "--entropy-weight", "0.5",
            "--alpha", "1e-3", "--seed", "7"]
    code, out, err = run_main(argv, capsys)
    assert (code, err) == (0, [])
    assert calls == [(("kl", 2, 3), {"sign": "du2020", "entropy_weight": 0.5, "alpha": 1e-3,
                                     "seed": 7})]
    assert "### fake check_kl_loss" in out and "seed 7" in out


def test_entropy_options_reach_check_entropy(helper, monkeypatch, capsys):
    calls = []
    _spy(monkeypatch, "check_entropy", calls)
    code, out, err = run_main(["--entropy", f"{helper}:entropy", "--seed", "4"], capsys)
    assert (code, err) == (0, [])
    assert calls == [(("entropy", 4), {"alpha": ALPHA, "seed": 4})]
    assert "### fake check_entropy" in out


@pytest.mark.parametrize("option, check", [("--kl-loss", "check_kl_loss"),
                                           ("--entropy", "check_entropy")])
def test_user_function_error_is_a_failed_check(option, check, helper, monkeypatch, capsys):
    """An exception inside the user's function: exit status 1, one line naming it."""
    _spy(monkeypatch, check, [])
    code, out, err = run_main([option, f"{helper}:raises"], capsys)
    assert (code, out) == (1, "")
    assert err == [f"{PROG}: error: {helper}:raises raised TypeError: my bug"]


@pytest.mark.parametrize("option, check", [("--kl-loss", "check_kl_loss"),
                                           ("--entropy", "check_entropy")])
def test_underpowered_kl_or_entropy_names_alpha(option, check, helper, monkeypatch, capsys):
    """An underpowered KL or entropy design is bad input about --alpha (these checks have no
    --scale): exit status 2."""
    fn = "kl" if check == "check_kl_loss" else "entropy"
    _spy(monkeypatch, check, [], UnderpoweredError("underpowered: too few batches"))
    code, _, err = run_main([option, f"{helper}:{fn}"], capsys)
    assert code == 2
    assert err == [f"{PROG}: error: --alpha: underpowered: too few batches"]


@pytest.mark.parametrize("option", ["--kl-loss", "--entropy"])
def test_bad_spec_names_its_option(option, capsys):
    code, _, err = run_main([option, "nocolon"], capsys)
    assert code == 2
    assert err == [f"{PROG}: error: {option}: expected MODULE:FUNCTION, got 'nocolon'"]


def test_check_refusals_name_the_option(helper, capsys):
    """The checks' own argument errors come back as the option (fast: refused before any
    pilot or sampling)."""
    code, _, err = run_main(["--kl-loss", f"{helper}:kl", "--entropy-weight", "-1"], capsys)
    line = f"{PROG}: error: --entropy-weight: must be a finite number >= 0, got -1.0"
    assert (code, err) == (2, [line])
    code, _, err = run_main(["--kl-loss", f"{helper}:kl", "--alpha", "2"], capsys)
    assert (code, err) == (2, [f"{PROG}: error: --alpha: must lie in [0, 1], got 2.0"])
    code, _, err = run_main(["--entropy", f"{helper}:entropy", "--alpha", "2"], capsys)
    assert (code, err) == (2, [f"{PROG}: error: --alpha: must lie in [0, 1], got 2.0"])


def test_sampler_errors(helper, capsys):
    """--targets outside the kind's list is refused naming --targets (the names as given);
    a sampler that raises fails the check (exit 1) naming MODULE:FUNCTION."""
    code, _, err = run_main(["--sampler", f"{helper}:kl", "--kind", "ula", "--targets",
                             "gauss2d", "mixture2d"], capsys)
    assert code == 2
    line = (f"{PROG}: error: --targets: distinct names from ('gauss2d', 'gauss20d') for "
            "kind='ula', got ('gauss2d', 'mixture2d')")
    assert err == [line]
    code, _, err = run_main(["--sampler", f"{helper}:raises", "--kind", "ula", "--targets",
                             "gauss2d"], capsys)
    assert code == 1
    assert err == [f"{PROG}: error: {helper}:raises raised TypeError: my bug"]


def test_debug_shows_the_exception(capsys):
    """With --debug the error propagates (for its traceback) instead of the one-line exit 2."""
    with pytest.raises(ValueError, match=r"^--sampler: expected MODULE:FUNCTION, got 'x'$"):
        main(["--sampler", "x", "--debug"])
