"""The training methods of the digits rung (paper §4, §5, §6) as overrides of one common
configuration, so that a method differs from the NLL baseline only in what it names.

Common (every method, the T = 1 regime whose likelihoods AIS measures): ULA in the paper's
parametrisation (eq. 1, x ← x − (λ/2)∇E + √λ ξ, λ = 4e-3, no gradient clip, no clamp: its
stationary law is close to p_θ — MALA accepts ~ 0.9 of these steps on trained models), 20
sampler steps per update, batch 64 and a 1,000-state replay buffer per seed, Adam
β = (0.9, 0.999), no energy penalty (l2 = 0: the energies' offset does not change p_θ), the
learning rate tuned per method (:mod:`digits.fit`).

| method | chains start at / extra loss | paper |
| --- | --- | --- |
| nll | noise buffer, 5 % re-initialised to uniform noise at each read | §5.1.1 |
| pcd | buffer filled from data, never re-initialised (persistent CD) | §4.6 |
| true_cd | buffer from data, 10 % of each read re-picked from data | §6.1 |
| cd | the data batch (CD-k, k = 20) | §4 |
| nll_kl_du2020 | nll + KL loss, Du et al. (2020)'s published sign, entropy weight 0.3 | §5.4 |
| nll_kl_cd | nll + KL loss with the sign CD needs | §4.2 |
| true_cd_kl_cd | true_cd + KL loss with the sign CD needs (§6.1's second try) | §6.1 |
| nll_elastic | nll + an elastic deformation of every buffer read | §6.3 |

Du's low-temperature regime (claims C26, C28; no likelihood: T = σ²/(2α) = 1.25e-6): Du &
Mordatch's step x ← clamp(x − α·clip(∇E, ±0.01) + σξ, 0, 1), α = 10, σ = 0.005, on clean digits,
energy penalty 1.0, Adam β = (0, 0.999) (IGEBM):

| method | extra |
| --- | --- |
| du_nll | none (IGEBM's NLL) |
| du_kl_du2020 | + KL loss, published sign, entropy weight 0.3 |
| du_kl_cd | + KL loss, the sign CD needs, entropy weight 0.3 |

The KL loss differentiates the last sampler step of 16 chains per seed (Du et al. 2020: one
step, 32 chains) against 100 buffer states for the entropy term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from digits.models import FlatImages
from ebmref.config import TrainConfig, with_overrides
from ebmref.transitions import GridElasticDeform
from ebmref.validation import check_choice

COMMON: dict[str, object] = {
    "sampler.kind": "ula", "sampler.n_steps": 20, "sampler.step_size": 4e-3,
    "sampler.noise": None, "sampler.grad_clip": None, "sampler.clamp": None,
    "buffer.size": 1000, "buffer.reinit_prob": 0.05, "buffer.data_fraction": 0.1,
    "optim.l2": 0.0, "optim.betas": (0.9, 0.999), "optim.max_grad_norm": None,
    "optim.lr": 1e-3, "run.batch_size": 64, "run.device": "cpu", "run.progress": False,
    "run.dtype": "float32",
}
KL = {"kl.weight": 1.0, "kl.differentiable_steps": 1, "kl.n_chains": 16,
      "kl.entropy_weight": 0.3, "kl.entropy_reference": 100}
DU = {"sampler.noise": 0.005, "sampler.step_size": 10.0, "sampler.grad_clip": 0.01,
      "sampler.clamp": (0.0, 1.0), "optim.l2": 1.0, "optim.betas": (0.0, 0.999)}
ELASTIC_SIGMA = 0.5  # pixels (MNIST: 1.0 of 28; here of 8)
ELASTIC_POINTS = 3


@dataclass(frozen=True)
class Method:
    """A method: ``overrides`` of :data:`COMMON`; ``regime`` "t1" (likelihood, noisy digits)
    or "du" (Du's low-temperature sampler, clean digits); ``elastic``: deformations on reads;
    ``paper``: the section."""

    name: str
    overrides: dict = field(default_factory=dict)
    regime: str = "t1"
    elastic: bool = False
    paper: str = ""
    what: str = ""

    def config(self, lr: float, n_updates: int, seed: int = 0) -> TrainConfig:
        return with_overrides(TrainConfig(), {**COMMON, **self.overrides, "optim.lr": lr,
                                              "run.n_updates": n_updates, "run.seed": seed})

    def transition(self):
        if not self.elastic:
            return None
        return FlatImages(GridElasticDeform(ELASTIC_SIGMA, ELASTIC_POINTS))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("nll", {"buffer.init": "noise"}, paper="§5.1.1",
           what="noise buffer, 5 % re-init"),
    Method("pcd", {"buffer.init": "data"}, paper="§4.6", what="buffer from data, no re-init"),
    Method("true_cd", {"buffer.init": "true_cd"}, paper="§6.1",
           what="buffer from data, 10 % re-picked"),
    Method("cd", {"buffer.init": "cd"}, paper="§4", what="chains from the data batch (CD-20)"),
    Method("nll_kl_du2020", {"buffer.init": "noise", **KL, "kl.sign": "du2020"}, paper="§5.4",
           what="nll + KL loss, published sign"),
    Method("nll_kl_cd", {"buffer.init": "noise", **KL, "kl.sign": "cd"}, paper="§4.2",
           what="nll + KL loss, CD sign"),
    Method("true_cd_kl_cd", {"buffer.init": "true_cd", **KL, "kl.sign": "cd"}, paper="§6.1",
           what="true_cd + KL loss, CD sign"),
    Method("nll_elastic", {"buffer.init": "noise", "buffer.transition_on_read": True},
           elastic=True, paper="§6.3", what="nll + elastic deformation of every read"),
    Method("du_nll", {"buffer.init": "noise", **DU}, regime="du", paper="§5.1",
           what="IGEBM: Du's sampler, no KL loss"),
    Method("du_kl_du2020", {"buffer.init": "noise", **DU, **KL, "kl.sign": "du2020"},
           regime="du", paper="§5.4", what="Du's sampler + KL loss, published sign"),
    Method("du_kl_cd", {"buffer.init": "noise", **DU, **KL, "kl.sign": "cd"}, regime="du",
           paper="§4.2", what="Du's sampler + KL loss, CD sign"),
)}
LIKELIHOOD_METHODS = tuple(n for n, m in METHODS.items() if m.regime == "t1")
DU_METHODS = tuple(n for n, m in METHODS.items() if m.regime == "du")


def get_method(name: str) -> Method:
    check_choice(name, "method", tuple(METHODS))
    return METHODS[name]
