"""ebmref.conformance: the public checks pass on ebmref's own samplers, KL loss and entropy
estimator, and flag each deliberately broken variant (rules in ebmref/stats.py).

Every check states its total α (1e-6, Bonferroni over the rows of its table) and asserts its
power from the design before sampling (UnderpoweredError, which is not an AssertionError, so a
power failure cannot satisfy ``pytest.raises(AssertionError)`` around a broken variant). Each
broken variant's effect is far above the detectable effect the check asserts:

* ULA with noise √(2λ) instead of √λ: covariance off by a factor up to ≈ 2 (closed form,
  asserted below) against a detectable 4.3 %;
* MALA without the Hastings term q(x|y)/q(y|x): the variance of gauss2d shrinks by ≈ 36 %
  (measured with the default design), the mixture's projections move by KS distance ≈ 0.04;
* a kernel that does nothing: conserves every law, so only the movement guard catches it
  (asserted: exactly the movement rows fail);
* the KL loss with the published (du2020) sign where CD's is required: shift 2|g*|, and a
  loss whose energy is not frozen: shift E_q[∇_θE_θ] — the check asserts power ≥ 1 − 1e-3
  for both;
* an entropy estimator without its factor d: off by ≈ 2.4 nats in d = 2 and by (d − 1)·log 2
  in Ĥ(2x) − Ĥ(x).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from ebmref.analytic import ula_gaussian_law
from ebmref.conformance import (
    Report,
    Row,
    UnderpoweredError,
    assert_conforms,
    check_entropy,
    check_kl_loss,
    check_sampler,
)
from ebmref.conformance.__main__ import main
from ebmref.conformance.targets import TARGETS, ula_start
from ebmref.entropy import kozachenko_leonenko, log_unit_ball_volume, nearest_neighbour_surrogate
from ebmref.objectives import frozen_energy, kl_loss
from ebmref.samplers import langevin, mala, ornstein_uhlenbeck
from ebmref.stats import ALPHA, chi2_detectable_rel_error, ks_test, whitened_gaussian_tests

F64 = torch.float64
SIGMA = 0.5  # σ of the decoupled sampler under test


# ---------------------------------------------------------------- samplers under test


def ula(energy, x0, n_steps, step_size, generator):
    return langevin(energy, x0, n_steps, step_size, generator=generator)


def decoupled(energy, x0, n_steps, step_size, generator):
    return langevin(energy, x0, n_steps, step_size, noise=SIGMA, generator=generator)


def mala_kernel(energy, x0, n_steps, step_size, generator):
    return mala(energy, x0, n_steps, step_size, generator=generator)


def ou_kernel(energy, x0, n_steps, step_size, generator):
    """The exact diffusion for time λ/2 per step (the exact version of an eq.-1 step)."""
    return ornstein_uhlenbeck(energy, x0, n_steps, step_size / 2, generator=generator)


def ula_noise_sqrt_2lambda(energy, x0, n_steps, step_size, generator):
    """Broken: eq. 1 with noise √(2λ) instead of √λ (drift λ/2 kept)."""
    x = x0
    for _ in range(n_steps):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x - 0.5 * step_size * energy.grad(x) + math.sqrt(2 * step_size) * xi
    return x


def decoupled_noise_times_sqrt2(energy, x0, n_steps, step_size, generator):
    """Broken: Du's step with σ√2 where σ is declared."""
    return langevin(energy, x0, n_steps, step_size, noise=SIGMA * math.sqrt(2),
                    generator=generator)


def mala_without_hastings(energy, x0, n_steps, step_size, generator):
    """Broken: eq.-1 proposals accepted with min(1, e^{E(x) − E(y)}), no q(x|y)/q(y|x)."""
    x = x0
    e_x, g_x = energy.energy_and_grad(x)
    for _ in range(n_steps):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        y = x - 0.5 * step_size * g_x + math.sqrt(step_size) * xi
        e_y, g_y = energy.energy_and_grad(y)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
        accept = torch.log(u) < e_x - e_y
        x = torch.where(accept[:, None], y, x)
        e_x, g_x = torch.where(accept, e_y, e_x), torch.where(accept[:, None], g_y, g_x)
    return x


def do_nothing(energy, x0, n_steps, step_size, generator):
    """Broken: the identity kernel, which conserves every law."""
    return x0


GAUSSIANS = ("gauss2d", "gauss20d")
PASSING = {
    "ula": (ula, {"kind": "ula"}),
    "decoupled": (decoupled, {"kind": "decoupled", "noise": SIGMA}),
    "mala": (mala_kernel, {"kind": "exact"}),
    "ou": (ou_kernel, {"kind": "exact", "targets": GAUSSIANS}),
}
# The exact-kernel twins run a quarter of the documented design, which still detects a 15 %
# variance error with probability ≥ 1 − 1e-3 (asserted by check_sampler); their effects are
# ≥ 36 % (missing Hastings term, ULA's bias at these steps) or total (no movement).
QUICK = {"scale": 0.25, "rel_error": 0.15}
BROKEN = {
    "ula_noise_sqrt_2lambda": (ula_noise_sqrt_2lambda, {"kind": "ula"}),
    "decoupled_noise_sigma_sqrt2": (decoupled_noise_times_sqrt2,
                                    {"kind": "decoupled", "noise": SIGMA}),
    "mala_without_hastings": (mala_without_hastings, {"kind": "exact", **QUICK}),
    "ula_as_exact_kernel": (ula, {"kind": "exact", **QUICK}),
    "do_nothing": (do_nothing, {"kind": "exact", **QUICK}),
}


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("name", sorted(PASSING))
def test_check_sampler_passes_ebmref_samplers(name, rng):
    """ebmref's ULA (eq. 1 and decoupled), MALA and exact OU conform, at α = 1e-6 per check."""
    fn, kwargs = PASSING[name]
    report = check_sampler(fn, seed=rng, **kwargs)
    assert_conforms(report)
    assert len(report.rows) == {"ula": 6, "decoupled": 6, "mala": 14, "ou": 8}[name]
    assert all(r.alpha == pytest.approx(ALPHA / len(report.rows)) for r in report.rows)


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_sampler_flags_broken_samplers(name, rng):
    fn, kwargs = BROKEN[name]
    report = check_sampler(fn, seed=rng, **kwargs)
    with pytest.raises(AssertionError, match="fail"):
        assert_conforms(report)
    if name == "do_nothing":  # only the movement guard can see it
        assert {r.statistic.split(" ")[0] for r in report.failures} == {"moved"}
        assert len(report.failures) == 4


def test_broken_noise_effect_exceeds_the_detectable_error():
    """Design of the noise-factor twin: the law of eq. 1 with noise √(2λ) differs from eq. 1's
    law by a covariance factor ≥ 1.5 in some direction on both Gaussian targets, far above the
    4.3 % (2-D) and 2.7 % (20-D) the χ² rows detect at α/6 with power 1 − 1e-3."""
    for name, m, detectable in (("gauss2d", 40_000, 0.043), ("gauss20d", 10_000, 0.027)):
        target = TARGETS[name]
        energy = target.make()
        m0, c0 = ula_start(energy, target)
        args = (energy.mu.detach(), energy.precision.detach(), m0, c0, target.n_steps["ula"])
        _, cov = ula_gaussian_law(*args, 0.4)
        _, cov_bad = ula_gaussian_law(*args, 0.2, math.sqrt(0.8))
        ratio = torch.linalg.eigvals(torch.linalg.solve(cov, cov_bad)).real
        assert float(ratio.max()) > 1.5
        assert chi2_detectable_rel_error(m, energy.dim, ALPHA / 6) < detectable


def test_underpowered_design_is_refused_before_sampling():
    calls = []

    def spy(energy, x0, n_steps, step_size, generator):
        calls.append(1)
        return x0

    with pytest.raises(UnderpoweredError, match="underpowered"):
        check_sampler(spy, kind="ula", scale=0.1)
    with pytest.raises(UnderpoweredError, match="underpowered"):
        check_sampler(spy, kind="exact", targets=["mixture2d"], scale=0.5)
    assert calls == []
    # The documented way to a quick run: a smaller design with a larger effect to catch.
    report = check_sampler(ula, kind="ula", scale=0.1, rel_error=0.15, seed=1)
    assert report.passed and "M=4000" in report.rows[0].target


@pytest.mark.parametrize("call, arg", [
    (lambda: check_sampler(ula, kind="mala"), "kind"),
    (lambda: check_sampler(ula, kind="decoupled"), "noise"),
    (lambda: check_sampler(ula, kind="ula", noise=0.1), "noise"),
    (lambda: check_sampler(ula, kind="ula", targets=["mixture2d"]), "targets"),
    (lambda: check_sampler(ula, kind="ula", targets="all"), "targets"),
    (lambda: check_sampler(ula, kind="ula", step_size=-0.1), "step_size"),
    (lambda: check_sampler(ula, kind="ula", n_steps={"gauss2d": 0}), "n_steps"),
    (lambda: check_sampler(ula, kind="ula", step_size={"mixture2d": 0.1}), "step_size"),
    (lambda: check_sampler(ula, kind="ula", alpha=2.0), "alpha"),
    (lambda: check_sampler(ula, kind="ula", scale=0.0), "scale"),
    (lambda: check_sampler(ula, kind="ula", seed=-1), "seed"),
    (lambda: check_sampler(ula, kind="ula", seed="x"), "seed"),
    (lambda: check_sampler(3, kind="ula"), "fn"),
    (lambda: check_sampler(lambda e, x0, n, s, g: x0[:5], kind="ula"), "fn"),
    (lambda: check_kl_loss(kl_loss, sign="plus"), "sign"),
    (lambda: check_kl_loss(kl_loss, entropy_weight=-1.0), "entropy_weight"),
    (lambda: check_kl_loss(kl_loss, batches=2), "batches"),
    (lambda: check_entropy(kozachenko_leonenko, reps=3), "reps"),
    (lambda: check_entropy(lambda x: torch.zeros(2)), "estimator"),
    (lambda: assert_conforms(), "reports"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        call()


def test_report_rows_verdicts_and_table():
    rows = [Row("t", "|x| s", 1.0, 0.5, 1e-7, "e"), Row("t", "s", 2.0, 1e-9, 1e-7, "e"),
            Row("t", "s", math.nan, math.nan, 1e-7, "e")]
    assert [r.verdict for r in rows] == ["pass", "fail", "fail"]  # NaN fails
    report = Report("demo", 3e-7, 5, rows, ["design line"])
    text = report.markdown()
    assert "| target | statistic (null law) | value | p-value | α |" in text
    assert "seed 5" in text and "2 of 3 rows fail" in text and "- design line" in text
    assert "| \\|x\\| s |" in text  # a | inside a cell is escaped (the table keeps 7 columns)
    with pytest.raises(AssertionError, match="demo"):
        assert_conforms(report)
    assert_conforms(Report("ok", 1e-6, 0, rows[:1]))
    assert not Report("empty", 1e-6, 0).passed


def test_statistics_fail_on_non_finite_states():
    x = torch.zeros(50, 2, dtype=F64)
    x[3, 1] = math.nan
    tests = whitened_gaussian_tests(x, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    assert all(math.isnan(p) for _, p in tests.values())
    assert math.isnan(ks_test(x[:, 1], lambda t: t)[1])


# ---------------------------------------------------------------- KL loss


def kl_cd(energy, x_diff):
    return kl_loss(energy, x_diff, sign="cd", entropy_weight=1.0, entropy="kl", k=5)


def kl_du2020(energy, x_diff):
    return kl_loss(energy, x_diff, sign="du2020", entropy_weight=1.0, entropy="kl", k=5)


def kl_cd_energy_not_frozen(energy, x_diff):
    """Broken: E_θ evaluated with live parameters, so θ is reached through E as well."""
    return -(energy(x_diff).mean() - kozachenko_leonenko(x_diff, k=5))


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("fn, sign", [(kl_cd, "cd"), (kl_du2020, "du2020")],
                         ids=["cd", "du2020"])
def test_check_kl_loss_passes_ebmref_kl_loss(fn, sign, rng):
    """C23: ebmref's kl_loss has the gradient s·∂/∂θ KL[q_θ^t ‖ p_Ω] of its sign. α = 1e-6."""
    assert_conforms(check_kl_loss(fn, sign=sign, seed=rng))


@pytest.mark.stochastic(alpha=ALPHA)
@pytest.mark.parametrize("fn", [kl_du2020, kl_cd_energy_not_frozen],
                         ids=["flipped_sign", "energy_not_frozen"])
def test_check_kl_loss_flags_broken_losses(fn, rng):
    report = check_kl_loss(fn, sign="cd", seed=rng)
    with pytest.raises(AssertionError):
        assert_conforms(report)
    assert any(r.target.startswith("gradient") for r in report.failures)


def test_kl_loss_with_no_gradient_fails():
    """A loss on a detached x̃ (and an energy frozen by hand) reaches θ nowhere: zero
    gradient, which the gradient rows reject exactly (s = 0)."""
    def detached(energy, x_diff):
        return -frozen_energy(energy, x_diff.detach()).mean()
    report = check_kl_loss(detached, sign="cd", entropy_weight=0.0, seed=3)
    assert not report.passed
    assert all(not r.passed for r in report.rows if r.target.startswith("gradient"))


# ---------------------------------------------------------------- entropy


def entropy_without_d(x):
    """Broken: Kozachenko–Leonenko's constant with the mean log NN distance not multiplied
    by d (the paper's (1/n)Σ log(n·NN) form up to a constant): right only in d = 1."""
    n, d = x.shape
    const = float(torch.special.digamma(torch.tensor(float(n), dtype=F64))) + 0.5772156649015329
    return const + log_unit_ball_volume(d) + nearest_neighbour_surrogate(x)


ENTROPY_REPS = 30  # sets per bias row: detects a bias of tol + 0.3 nats (asserted by the check)


@pytest.mark.stochastic(alpha=ALPHA)
def test_check_entropy_passes_kozachenko_leonenko(rng):
    """C25: Kozachenko–Leonenko (k = 1) is unbiased within 0.03 nats in d = 1, 2 and scales
    exactly by d·log 2. α = 1e-6."""
    assert_conforms(check_entropy(kozachenko_leonenko, reps=ENTROPY_REPS, effect=0.3, seed=rng))


@pytest.mark.stochastic(alpha=ALPHA)
def test_check_entropy_flags_missing_factor_d(rng):
    report = check_entropy(entropy_without_d, reps=ENTROPY_REPS, effect=0.3, seed=rng)
    with pytest.raises(AssertionError):
        assert_conforms(report)
    failed = {r.target.split(" (")[0] for r in report.failures}
    assert failed == {"N(0, C) in d = 2", "scaling x → 2x in d = 2", "scaling x → 2x in d = 10"}


# ---------------------------------------------------------------- command line

HELPERS = '''
import math
import torch
from ebmref.samplers import langevin


def good(energy, x0, n_steps, step_size, generator):
    return langevin(energy, x0, n_steps, step_size, generator=generator)


def bad(energy, x0, n_steps, step_size, generator):
    return langevin(energy, x0, n_steps, step_size / 2, noise=math.sqrt(2 * step_size),
                    generator=generator)


def raises(energy, x0, n_steps, step_size, generator):
    raise TypeError("my bug")
'''


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    name = f"conformance_helpers_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.stochastic(alpha=ALPHA)
def test_cli_exit_status_and_table(helper_module, capsys):
    assert main(["--sampler", f"{helper_module}:good", "--kind", "ula", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "check_sampler(kind='ula')" in out and "**pass**" in out and "seed 11" in out
    assert main(["--sampler", f"{helper_module}:bad", "--kind", "ula"]) == 1
    assert "**fail**" in capsys.readouterr().out
    assert main(["--sampler", f"{helper_module}:raises", "--kind", "ula"]) == 1
    assert "raised TypeError: my bug" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--sampler", "no_such_module_xyz:f"], "--sampler: cannot import"),
    (["--sampler", "HELPER:missing"], "--sampler: "),
    (["--sampler", "HELPER"], "--sampler: expected MODULE:FUNCTION"),
    (["--sampler", "HELPER:good", "--kind", "decoupled"], "--noise: "),
    (["--sampler", "HELPER:good", "--kind", "ula", "--scale", "0.05"], "--scale: underpowered"),
    (["--entropy", "HELPER:good", "--kind", "ula"], "--kind: only with --sampler"),
    (["--sampler", "HELPER:good", "--sign", "cd"], "--sign: only with --kl-loss"),
    (["--sampler", "HELPER:good", "--kl-loss", "HELPER:good"], "not allowed with"),
])
def test_cli_bad_input_exits_2(argv, words, helper_module, capsys):
    argv = [a.replace("HELPER", helper_module) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert words in capsys.readouterr().err


def test_entry_point_is_declared():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'ebmref-conformance = "ebmref.conformance.__main__:main"' in text
