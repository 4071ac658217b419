"""ebmref.machine.cpu_model: the CPU name that reports and benchmarks record with a result."""

from __future__ import annotations

import io

import pytest

from ebmref import machine

CPUINFO = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
           "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz: rev 3  \nflags\t\t: fpu\n"
           "model name\t: a second core's name\n")


def _open_returning(text: str | None):
    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        if text is None:
            raise FileNotFoundError(path)
        return io.StringIO(text)
    return fake_open


def test_reads_the_first_model_name_of_proc_cpuinfo(monkeypatch):
    """Everything after the first colon of the first "model name" line, stripped."""
    monkeypatch.setattr(machine, "open", _open_returning(CPUINFO), raising=False)
    assert machine.cpu_model() == "Intel(R) Xeon(R) CPU @ 2.20GHz: rev 3"


@pytest.mark.parametrize("text", [None, "processor\t: 0\nflags\t\t: fpu\n"])
@pytest.mark.parametrize(("processor", "expected"), [("x86_64-proc", "x86_64-proc"),
                                                     ("", "the-machine")])
def test_falls_back_to_platform_without_a_model_name(monkeypatch, text, processor, expected):
    """No /proc/cpuinfo (macOS, Windows) or no model name in it: platform.processor(), or
    platform.machine() when that is empty."""
    monkeypatch.setattr(machine, "open", _open_returning(text), raising=False)
    monkeypatch.setattr(machine.platform, "processor", lambda: processor)
    monkeypatch.setattr(machine.platform, "machine", lambda: "the-machine")
    assert machine.cpu_model() == expected
