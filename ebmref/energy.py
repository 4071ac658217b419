"""The energy contract and analytic energies with known normalising constant (paper §1, §5.2.1).

An energy maps a batch ``x`` of shape ``(B, *event_shape)`` to ``(B,)``; the model density is
p_θ(x) = exp(−E_θ(x)) / Z_θ. Lower energy means more likely.

Analytic energies additionally expose ``log_partition()`` (log Z_θ), ``log_prob(x)`` and an exact
``sample(n, generator)`` so that every sampler and objective can be checked against the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import integrate
from torch import Tensor, nn

from ebmref.validation import (
    check_finite,
    check_int_range,
    check_positive,
    check_positive_definite,
    check_shape,
)


class Energy(nn.Module):
    """E_θ: (B, *event_shape) → (B,). Subclasses implement ``forward``.

    ``grad(x)`` returns ∇ₓE(x); the default uses autograd, analytic energies override it with
    closed forms (faster, and exact to float64 round-off).
    """

    event_shape: tuple[int, ...] = ()
    n_members: int = 1  # > 1: an ensemble of independent energies (ebmref.ensemble)

    def grad(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """∇ₓE(x) for a batch, shape of ``x``."""
        return self.energy_and_grad(x, create_graph=create_graph)[1]

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """(E(x), ∇ₓE(x)) in one pass; the energy is returned detached unless ``create_graph``."""
        with torch.enable_grad():
            xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            e = self(xg)
            (g,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph)
        return (e if create_graph else e.detach()), g

    def _check_batch(self, x: Tensor) -> None:
        if self.event_shape and tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"x: expected shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )


class AnalyticEnergy(Energy):
    """An energy whose log-partition log Z_θ = log ∫ exp(−E_θ(x)) dx is known."""

    def log_partition(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_θ(x) = −E_θ(x) − log Z_θ (paper §1)."""
        return -self(x) - self.log_partition()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")


def row_sum(t: Tensor) -> Tensor:
    """Σ over all but the batch dimension, (B, ...) → (B,), as a matrix–vector product: for the
    few coordinates of analytic energies this is several times faster than ``sum(-1)``."""
    flat = t.reshape(t.shape[0], -1)
    return flat @ torch.ones(flat.shape[1], dtype=t.dtype, device=t.device)


def small_matmul(a: Tensor, m: Tensor) -> Tensor:
    """a @ m for a batch a (B, d) and a small matrix m (d, d'): for d ≤ 8, d fused
    multiply-adds over the batch, ~1.5-2x faster than a GEMM with tiny inner sizes on CPU."""
    if a.ndim != 2 or a.shape[1] > 8:
        return a @ m
    out = a[:, :1] * m[0]
    for i in range(1, a.shape[1]):
        out.addcmul_(a[:, i:i + 1], m[i])
    return out


def _chains_first(t: Tensor) -> Tensor:
    """(d, B) → contiguous (B, d). For a few coordinates, d column copies beat a transposed
    copy (``t.T.contiguous()``) several times on CPU."""
    if t.shape[0] > 8:
        return t.T.contiguous()
    out = torch.empty(t.shape[1], t.shape[0], dtype=t.dtype, device=t.device)
    for i in range(t.shape[0]):
        out[:, i] = t[i]
    return out


def _as_tensor(value, name: str, dtype: torch.dtype | None) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype if dtype is not None else torch.get_default_dtype())
    check_finite(t, name)
    return t.clone()


def gaussian_covariance(scale_tril: Tensor) -> Tensor:
    """Σ = L Lᵀ with L the lower triangle of ``scale_tril``."""
    L = torch.tril(scale_tril)
    return L @ L.T


def gaussian_precision(scale_tril: Tensor) -> Tensor:
    """P = Σ⁻¹ = (L Lᵀ)⁻¹ from the Cholesky factor."""
    return torch.cholesky_inverse(torch.tril(scale_tril))


def gaussian_log_partition(scale_tril: Tensor) -> Tensor:
    """log Z = ½ log det(2πΣ) = ½ d log 2π + Σᵢ log|Lᵢᵢ| of E(x) = ½(x − μ)ᵀΣ⁻¹(x − μ)."""
    d = scale_tril.shape[-1]
    return 0.5 * d * math.log(2 * math.pi) + torch.log(torch.diagonal(scale_tril).abs()).sum()


class Gaussian(AnalyticEnergy):
    """E(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ), so p_θ = N(μ, Σ) and log Z = ½ log det(2πΣ).

    Learnable parameters: the mean ``mu`` (d,) and the Cholesky factor ``scale_tril`` (d, d) of
    the covariance Σ = L Lᵀ (only its lower triangle is used).
    """

    def __init__(self, mean, covariance, dtype: torch.dtype | None = None):
        super().__init__()
        mu = _as_tensor(mean, "mean", dtype)
        cov = _as_tensor(covariance, "covariance", mu.dtype)
        if mu.ndim != 1:
            raise ValueError(f"mean: expected a vector (d,), got shape {tuple(mu.shape)}")
        d = mu.shape[0]
        check_shape(cov, (d, d), "covariance")
        check_positive_definite(cov, "covariance")
        self.mu = nn.Parameter(mu)
        self.scale_tril = nn.Parameter(torch.linalg.cholesky(cov))
        self.event_shape = (d,)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @property
    def L(self) -> Tensor:
        return torch.tril(self.scale_tril)

    @property
    def covariance(self) -> Tensor:
        return gaussian_covariance(self.scale_tril)

    @property
    def precision(self) -> Tensor:
        return gaussian_precision(self.scale_tril)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        # z = L⁻¹(x − μ) so that E = ½‖z‖².
        z = torch.linalg.solve_triangular(self.L, (x - self.mu).T, upper=False).T
        return 0.5 * (z * z).sum(-1)

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        self._check_batch(x)
        if create_graph:
            return super().energy_and_grad(x, create_graph=True)
        with torch.no_grad():
            diff = x - self.mu
            g = small_matmul(diff, self.precision)  # ∇E = Σ⁻¹(x − μ); Σ⁻¹ is symmetric
            return 0.5 * row_sum(diff * g), g

    def grad(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """∇ₓE = Σ⁻¹(x − μ) alone (ULA needs no energy value)."""
        self._check_batch(x)
        if create_graph:
            return super().grad(x, create_graph=True)
        with torch.no_grad():
            return small_matmul(x - self.mu, self.precision)

    def log_partition(self) -> Tensor:
        return gaussian_log_partition(self.scale_tril)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        check_int_range(n, "n", 1)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.mu.dtype,
                          device=self.mu.device)
        return (self.mu + eps @ self.L.T).detach()


class GaussianMixture(AnalyticEnergy):
    """E(x) = −log Σₖ exp(aₖ) N(x; μₖ, Σₖ), so Z = Σₖ exp(aₖ) and p = Σₖ πₖ N(μₖ, Σₖ).

    ``logits`` a (K,) are unnormalised log-weights (πₖ = softmax(a)ₖ); ``means`` (K, d);
    ``covariances`` (K, d, d) or a scalar/variance per component for isotropic ones.
    """

    def __init__(self, logits, means, covariances, dtype: torch.dtype | None = None):
        super().__init__()
        mus = _as_tensor(means, "means", dtype)
        if mus.ndim != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(mus.shape)}")
        k, d = mus.shape
        a = _as_tensor(logits, "logits", mus.dtype)
        check_shape(a, (k,), "logits")
        cov = _as_tensor(covariances, "covariances", mus.dtype)
        if cov.ndim == 0:
            cov = cov * torch.eye(d, dtype=mus.dtype).expand(k, d, d)
        elif cov.ndim == 1:
            check_shape(cov, (k,), "covariances")
            cov = cov[:, None, None] * torch.eye(d, dtype=mus.dtype)
        check_shape(cov, (k, d, d), "covariances")
        for i in range(k):
            check_positive_definite(cov[i], f"covariances[{i}]")
        self.logits = nn.Parameter(a)
        self.means = nn.Parameter(mus)
        self.scale_trils = nn.Parameter(torch.linalg.cholesky(cov).contiguous())
        self.event_shape = (d,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> Tensor:
        return torch.softmax(self.logits, 0)

    def component_log_density(self, x: Tensor) -> Tensor:
        """log N(x; μₖ, Σₖ) for every component, shape (B, K)."""
        self._check_batch(x)
        L = torch.tril(self.scale_trils)  # (K, d, d)
        # One triangular solve per component with B right-hand sides (K, d, B): ~3x faster than
        # B·K tiny batched solves.
        diff = x.T[None] - self.means[:, :, None]
        z = torch.linalg.solve_triangular(L, diff, upper=False)
        logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1).abs()).sum(-1)
        return (-0.5 * (z * z).sum(1) - logdet[:, None]).T - 0.5 * self.dim * math.log(2 * math.pi)

    def forward(self, x: Tensor) -> Tensor:
        return -torch.logsumexp(self.logits + self.component_log_density(x), dim=-1)

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Closed form ∇ₓE(x) = Σₖ rₖ(x) Σₖ⁻¹(x − μₖ) with the responsibilities
        rₖ(x) = softmax(aₖ + log N(x; μₖ, Σₖ)); no autograd graph, a few passes over (K, d, B)
        (faster than autograd for many chains, equal to it to float64 round-off)."""
        self._check_batch(x)
        if create_graph:
            return super().energy_and_grad(x, create_graph=True)
        with torch.no_grad():
            k, d = self.means.shape
            L = torch.tril(self.scale_trils)
            precision = torch.cholesky_inverse(L)  # (K, d, d), Σₖ⁻¹
            # Chains last, (K, d, B): every reduction below runs over a leading dimension,
            # vectorised along the B chains (reductions over a trailing dimension of size d or
            # K are several times slower on CPU). One GEMM gives all Σₖ⁻¹(x − μₖ).
            xt = x.T
            p_diff = torch.addmm((precision @ self.means[:, :, None]).reshape(k * d, 1),
                                 precision.reshape(k * d, d), xt, beta=-1).view(k, d, -1)
            diff = xt[None] - self.means[:, :, None]
            logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1).abs()).sum(-1)
            # aₖ + log N(x; μₖ, Σₖ), (K, B)
            log_joint = (diff * p_diff).sum(1).mul_(-0.5).add_(
                (self.logits - logdet - 0.5 * d * math.log(2 * math.pi))[:, None])
            resp = torch.softmax(log_joint, 0)
            # log Σₖ exp(ℓₖ) = ℓ_max − log r_max, with r_max ≥ 1/K: no under- or overflow.
            top, idx = log_joint.max(0)
            lse = top - torch.log(resp.gather(0, idx[None])[0])
            return -lse, _chains_first((p_diff * resp[:, None, :]).sum(0))

    def log_partition(self) -> Tensor:
        return torch.logsumexp(self.logits, 0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        check_int_range(n, "n", 1)
        with torch.no_grad():
            idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
            eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype,
                              device=self.means.device)
            L = torch.tril(self.scale_trils)[idx]
            return self.means[idx] + (L @ eps[..., None])[..., 0]


class DoubleWell(AnalyticEnergy):
    """1-D double well E(x) = a (x² − 1)² + b x on x ∈ ℝ (event shape (1,)).

    log Z has no closed form; it is computed by adaptive quadrature (scipy.integrate.quad,
    absolute error ≲ 1e-10, also for narrow wells). ``cdf`` interpolates the CDF tabulated on a
    grid of 200,001 points (error ≲ 2e-9 for a ≲ 100; the grid limits it for narrower wells:
    4e-8 at a = 10³, 2e-6 at a = 10⁵); ``sample`` inverts that table (error in x below 1e-6 for
    a ≲ 100).
    """

    def __init__(self, a: float = 2.0, b: float = 0.0, dtype: torch.dtype | None = None):
        super().__init__()
        check_positive(a, "a")
        if not math.isfinite(b):
            raise ValueError(f"b: must be finite, got {b}")
        dt = dtype if dtype is not None else torch.get_default_dtype()
        self.a = nn.Parameter(torch.tensor(float(a), dtype=dt))
        self.b = nn.Parameter(torch.tensor(float(b), dtype=dt))
        self.event_shape = (1,)

    def forward(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        x = x[:, 0]
        return self.a * (x * x - 1) ** 2 + self.b * x

    def _unnormalised(self):
        a, b = self.a.item(), self.b.item()
        return lambda t: np.exp(-(a * (t * t - 1) ** 2 + b * t))

    def _support(self) -> tuple[float, float]:
        # exp(−E) < 1e-300 outside |x| ≤ R once a R⁴/2 > 700 + |b| R.
        r = 2.0
        while self.a.item() * (r * r - 1) ** 2 - abs(self.b.item()) * r < 700:
            r *= 1.5
        return -r, r

    def _break_points(self, lo: float, hi: float) -> list[float]:
        """The stationary points (roots of E' = 4a x³ − 4a x + b) and each well's peak ± 2 and
        ± 8 local sd (1/√E''): a quadrature rule with no node within a well steps over it
        (break points at ±1 alone lost 25 nats of log Z at a = 1.45e6)."""
        a, b = self.a.item(), self.b.item()
        points = set()
        for root in np.roots([4 * a, 0.0, -4 * a, b]):
            if abs(root.imag) < 1e-9 * max(1.0, abs(root)):
                c = float(root.real)
                curvature = 12 * a * c * c - 4 * a
                points.add(c)
                if curvature > 0:
                    points.update(c + k / math.sqrt(curvature) for k in (-8, -2, 2, 8))
        return sorted(p for p in points if lo < p < hi)

    def log_partition(self) -> Tensor:
        lo, hi = self._support()
        z, _ = integrate.quad(self._unnormalised(), lo, hi, points=self._break_points(lo, hi),
                              epsabs=1e-13, epsrel=1e-12, limit=200)
        # A plain number: quadrature is not differentiable in (a, b).
        return torch.tensor(math.log(z), dtype=self.a.dtype)

    def cdf(self, x: Tensor) -> Tensor:
        """P(X ≤ x) by quadrature on the tabulated density (to ~1e-9 for a ≲ 100, see above)."""
        grid, cdf = self._cdf_table()
        return torch.as_tensor(np.interp(x.detach().cpu().numpy().ravel(), grid, cdf),
                               dtype=x.dtype).reshape(x.shape[:1])

    def _cdf_table(self, n: int = 200_001) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._support()
        grid = np.linspace(lo, hi, n)
        dens = self._unnormalised()(grid)
        cdf = integrate.cumulative_simpson(dens, x=grid, initial=0.0)
        return grid, cdf / cdf[-1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        check_int_range(n, "n", 1)
        grid, cdf = self._cdf_table()
        u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        return torch.as_tensor(np.interp(u, cdf, grid), dtype=self.a.dtype)[:, None]


class SumEnergy(Energy):
    """E(x) = Σᵢ Eᵢ(x): the product of experts ∏ᵢ pᵢ(x) up to normalisation (paper §5.2.1).

    Its normaliser is Z = ∫ exp(−Σᵢ Eᵢ) dx, which is *not* ∏ᵢ Zᵢ in general (the paper's
    display writes ∏ᵢ pᵢ with normaliser ∏ᵢ Zᵢ, which is not a normalised density).
    """

    def __init__(self, energies: Sequence[Energy]):
        super().__init__()
        if len(energies) == 0:
            raise ValueError("energies: need at least one energy, got an empty sequence")
        self.terms = nn.ModuleList(energies)
        self.event_shape = energies[0].event_shape

    def forward(self, x: Tensor) -> Tensor:
        return sum(term(x) for term in self.terms)


class TemperedEnergy(Energy):
    """E_T(x) = E(x) / T, whose Boltzmann law is p(x)^{1/T} / Z_T (paper §2.1)."""

    def __init__(self, energy: Energy, temperature: float):
        super().__init__()
        check_positive(temperature, "temperature")
        self.base = energy
        self.temperature = float(temperature)
        self.event_shape = energy.event_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) / self.temperature

    def energy_and_grad(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        e, g = self.base.energy_and_grad(x, create_graph=create_graph)
        return e / self.temperature, g / self.temperature
