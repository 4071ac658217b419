"""Conformance checks for anyone's sampler, KL loss and entropy estimator: the verification
suite's calibrated tests as a public API.

Each check runs the code under test on targets whose answer is known exactly, computes
statistics with exact (or conservative) null laws, splits a total false-failure rate α
(default 1e-6) evenly over its rows (Bonferroni), asserts from the design — before sampling —
that it detects the error it exists to catch with probability ≥ 1 − 1e-3, and returns a
:class:`Report`: one row per p-value with the target, the statistic and its null law, the
p-value, the row's α, the detectable effect and a pass/fail verdict.

* :func:`check_sampler` — ``fn(energy, x0, n_steps, step_size, generator) → states (B, d)``
  of kind "ula" (eq. 1: x − (λ/2)∇E + √λ ξ), "decoupled" (x − α∇E + σξ) or "exact" (MALA,
  HMC, exact diffusions): exact Gaussian laws of ULA in 2-D and 20-D; target conservation on
  Gaussians (2-D, 20-D), a 2-D mixture and a double well, with a movement guard.
* :func:`check_kl_loss` — ``loss_fn(energy, x_diff) → scalar``: the sign CD needs and the
  frozen energy (claim C23), against the closed-form KL term on a Gaussian model.
* :func:`check_entropy` — ``estimator(x) → Ĥ``: bias on Gaussians in d = 1, 2 and the exact
  scaling Ĥ(2x) = Ĥ(x) + d·log 2 in d = 2, 10 (claim C25).
* :func:`assert_conforms` — the pytest one-liner: raises AssertionError with the table.

Example::

    from ebmref.conformance import assert_conforms, check_sampler

    def my_ula(energy, x0, n_steps, step_size, generator):
        ...  # x ← x − (λ/2)∇E(x) + √λ ξ, n_steps times, noise from ``generator``

    def test_my_ula():
        assert_conforms(check_sampler(my_ula, kind="ula"))

From the command line: ``python -m ebmref.conformance --sampler MODULE:FUNCTION --kind ula``
(or the ``ebmref-conformance`` script), exit status 0 pass, 1 fail, 2 bad input.
"""

from ebmref.conformance.losses import check_entropy, check_kl_loss
from ebmref.conformance.report import Report, Row, assert_conforms
from ebmref.conformance.sampler import SAMPLER_KINDS, check_sampler
from ebmref.stats import UnderpoweredError

__all__ = ["SAMPLER_KINDS", "Report", "Row", "UnderpoweredError", "assert_conforms",
           "check_entropy", "check_kl_loss", "check_sampler"]
