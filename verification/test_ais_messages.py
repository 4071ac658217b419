"""Full error messages of ebmref.ais's argument checks (the library's convention: the argument,
the rule and the value got), for every check of ``ais``/``reverse_ais``/``fit_gaussian``/
``schedule``; verification/test_ais.py checks only that each names its argument."""

from __future__ import annotations

import re

import pytest
import torch

from ebmref.ais import UniformBox, ais, fit_gaussian, reverse_ais, schedule
from ebmref.energy import Gaussian, GaussianMixture

F64 = torch.float64


def _cases():
    target = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    base = Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], dtype=F64)
    mix = GaussianMixture([0.0], [[0.0, 0.0]], 1.0, dtype=F64)
    b = schedule(3, "linear")
    x = target.sample(4, torch.Generator().manual_seed(0))
    box = UniformBox(0.0, 1.0, (2,), dtype=F64)
    return [
        ("target: expected an ebmref.energy.Energy, got <class 'function'>",
         lambda: ais(lambda t: t, base, 4, b)),
        (("base: expected an ebmref.energy.Gaussian or ebmref.ais.UniformBox (known log Z₀ and "
          "exact samples), got <class 'ebmref.energy.GaussianMixture'>"),
         lambda: ais(target, mix, 4, b)),
        ("base: event shape (1,) differs from the target's (2,)",
         lambda: ais(target, Gaussian([0.0], [[1.0]], dtype=F64), 4, b)),
        ("betas: expected a 1-D tensor 0 = β₀ < … < β_K = 1 with K >= 1",
         lambda: ais(target, base, 4, torch.tensor([1.0], dtype=F64))),
        ("betas: must increase strictly from 0 to 1, got first 0.0, last 0.9",
         lambda: ais(target, base, 4, torch.tensor([0.0, 0.5, 0.9], dtype=F64))),
        ("betas: must be finite (no NaN or inf), got non-finite entries",
         lambda: ais(target, base, 4, torch.tensor([0.0, float("nan"), 1.0]))),
        ("step_size: a tensor must hold 4 finite values > 0 (one per β_k), got shape (3,)",
         lambda: ais(target, base, 4, b, torch.ones(3))),
        ("step_size: must be a finite number > 0, got -0.1", lambda: ais(target, base, 4, b, -0.1)),
        ("n_mcmc: must be an integer in [0, ∞], got -1",
         lambda: ais(target, base, 4, b, n_mcmc=-1)),
        ("kernel: expected a callable, got 'mala'", lambda: ais(target, base, 4, b, kernel="mala")),
        ("n_particles: must be an integer in [2, ∞], got 1", lambda: ais(target, base, 1, b)),
        ("adapt: must be a bool, got 1", lambda: ais(target, base, 4, b, adapt=1)),
        ("target_acceptance: must lie in (0, 1), got 1.0",
         lambda: ais(target, base, 4, b, adapt=True, target_acceptance=1.0)),
        ("n_pilot: must be an integer in [1, ∞], got 0",
         lambda: ais(target, base, 4, b, adapt=True, n_pilot=0)),
        ("samples: must be finite (no NaN or inf), got non-finite entries",
         lambda: reverse_ais(target, base, x * float("nan"), b)),
        ("samples: must lie inside the base's box", lambda: reverse_ais(target, box, x + 5.0, b)),
        ("data: expected a tensor (N, d) with N >= 2, got (1, 2)",
         lambda: fit_gaussian(torch.zeros(1, 2))),
        ("data: expected a tensor (N, d) with N >= 2, got <class 'list'>",
         lambda: fit_gaussian([[0.0, 1.0], [1.0, 0.0]])),
        ("data: must be finite (no NaN or inf), got non-finite entries",
         lambda: fit_gaussian(torch.full((3, 2), float("inf")))),
        ("inflate: must be a finite number > 0, got 0.0", lambda: fit_gaussian(x, inflate=0.0)),
        ("jitter: must be a finite number > 0, got 0.0", lambda: fit_gaussian(x, jitter=0.0)),
        ("n_steps: must be an integer in [1, ∞], got 0", lambda: schedule(0)),
        ("kind: must be one of ('linear', 'geometric', 'sigmoid'), got 'cosine'",
         lambda: schedule(4, "cosine")),
        ("sharpness: must be a finite number > 0, got 0.0",
         lambda: schedule(4, "sigmoid", sharpness=0.0)),
    ]


@pytest.mark.parametrize("i", range(len(_cases())))
def test_ais_argument_errors_have_their_full_message(i):
    """Each bad argument raises ValueError with exactly this message."""
    msg, call = _cases()[i]
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        call()
