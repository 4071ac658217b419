"""What one update of ebmref.training does with its options, exactly: a transition on chain
starts gets the run's generator and is clamped to ``sampler.clamp`` before the sampler moves the
chains; ``sampler.transition_every = 1`` applies it after each of the n sampler steps;
``optim.max_grad_norm`` clips the weight gradient to that norm and the update reports the norm
before clipping; with the KL loss on, an infinite energy still stops the run with
TrainingDiverged (not a ValueError of the loss), and so do chains that overflow; iterable data
builds the noise buffer with the batches' event shape; ``kl.sign = "cd"`` negates the KL loss;
without an entropy term no entropy reference is drawn; an ensemble's KL loss is split by
member."""

from __future__ import annotations

import math

import pytest
import torch

from ebmref.config import TrainConfig
from ebmref.nets import MLPEnergy
from ebmref.training import TrainingDiverged, TrainState, train, train_step
from verification.tiny_runs import SlopeEnergy, tiny_config

DT = torch.float64


def _config(**extra) -> TrainConfig:
    return tiny_config(**{"run.n_updates": 1, "run.log_every": 10, "buffer.noise_low": -1.0,
                          "buffer.noise_high": 1.0, "optim.max_grad_norm": None, **extra})


def _data() -> torch.Tensor:
    return torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=DT)


class _Shift:
    """A transition x → x + 100 that records the generators it is given."""

    def __init__(self):
        self.generators = []

    def __call__(self, x, generator):
        self.generators.append(generator)
        return x + 100.0


def test_transition_on_read_gets_the_generator_and_is_clamped():
    """Chain starts shifted by +100 and clamped to the box [−2, 2] sit at 2; one noiseless step
    x − 0.01·∇E down the slope then puts every chain end at 1.99 (had the shift not been
    clamped first, the step would start at ≈ 101 and be clamped back to exactly 2)."""
    shift = _Shift()
    cfg = _config(**{"buffer.transition_on_read": True, "sampler.clamp": (-2.0, 2.0),
                     "sampler.noise": 0.0})
    res = train(SlopeEnergy(), _data(), cfg, transition=shift)
    x_neg = res.buffer.storage[:4]  # FIFO: update 1's chain ends went to slots 0..3
    assert torch.allclose(x_neg, torch.full((4, 2), 1.99, dtype=DT), rtol=0, atol=1e-12)
    assert len(shift.generators) == 1 and isinstance(shift.generators[0], torch.Generator)


def test_transition_every_step_of_the_sampler():
    """sampler.transition_every = 1 with 3 sampler steps: 3 calls per update, each with a
    generator."""
    shift = _Shift()
    cfg = _config(**{"sampler.transition_every": 1, "sampler.n_steps": 3})
    train(SlopeEnergy(), _data(), cfg, transition=shift)
    assert len(shift.generators) == 3
    assert all(isinstance(g, torch.Generator) for g in shift.generators)


def test_max_grad_norm_clips_and_the_norm_before_clipping_is_reported():
    """max_grad_norm = 1e-3: after the update the weight gradient has norm 1e-3·n/(n + 1e-6)
    (torch's clip factor) for the reported pre-clip norm n > 1e-3."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=4, depth=1).to(DT)
    state = TrainState.create(energy, _config(**{"optim.max_grad_norm": 1e-3}))
    n = train_step(state, _data()[:4]).stats["grad_norm"]
    clipped = math.sqrt(sum(float((p.grad ** 2).sum()) for p in energy.parameters()))
    assert n > 1e-3
    assert clipped == pytest.approx(1e-3 * n / (n + 1e-6), rel=1e-9)


class _InfSum(SlopeEnergy):
    """E(x) = w·Σx + ∞: infinite energies with a finite ∇ₓE (the chains still move)."""

    def forward(self, x):
        return super().forward(x) + math.inf


def test_an_infinite_energy_under_the_kl_loss_is_a_divergence():
    cfg = _config(**{"kl.weight": 1.0, "kl.entropy_weight": 0.0})
    with pytest.raises(TrainingDiverged) as info:
        train_step(TrainState.create(_InfSum(), cfg), _data()[:4])
    assert str(info.value) == "training diverged at step 1: |energy| of data E(x⁺) = inf"


class _Square(SlopeEnergy):
    """E(x) = w·Σx²: a step of size 1e200 throws chains to ±inf, then NaN."""

    def forward(self, x):
        return self.w * (x * x).sum(-1)


def test_overflowing_chains_under_the_kl_loss_are_a_divergence():
    """The chain ends (differentiated for the KL loss) overflow: the update stops on the
    non-finite samples, reported as a divergence of update 1, not as the KL loss refusing
    them."""
    cfg = _config(**{"kl.weight": 1.0, "kl.entropy_weight": 0.0, "sampler.step_size": 1e200,
                     "sampler.n_steps": 2, "sampler.noise": 0.0})
    with pytest.raises(TrainingDiverged) as info:
        train_step(TrainState.create(_Square(), cfg), _data()[:4])
    assert info.value.step == 1 and info.value.quantity == "samples x⁻ (non-finite entries)"


def test_iterable_data_builds_the_noise_buffer_from_the_batch_shape():
    """Batches of shape (4, 2) from a list: an 8-state noise buffer of states (2,), whose
    restarts (reinit_prob = 1) are noise of that shape in the box."""
    batches = [_data()[:4], _data()[4:8]]
    torch.manual_seed(0)
    res = train(MLPEnergy(2, hidden=4, depth=1), batches,
                _config(**{"run.n_updates": 2, "buffer.reinit_prob": 1.0}))
    assert res.buffer.storage.shape == (8, 2)
    assert res.buffer.noise_fn.event_shape == (2,)


def test_kl_sign_cd_negates_the_kl_loss():
    """kl.sign = "cd" is the negative of the published ("du2020") KL loss on the same chains
    (same energy, data and generator)."""
    losses = {}
    for sign in ("du2020", "cd"):
        torch.manual_seed(0)
        state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT),
                                  _config(**{"kl.weight": 1.0, "kl.sign": sign}))
        losses[sign] = train_step(state, _data()[:4]).stats["loss_kl"]
    assert losses["du2020"] != 0.0 and losses["cd"] == -losses["du2020"]


def test_without_entropy_term_no_reference_is_drawn():
    """KL loss on, kl.entropy_weight = 0: the entropy reference is not drawn, so its size
    (8 or 32 buffer states) leaves the run's random stream as it is."""
    gens = []
    for size in (8, 32):
        torch.manual_seed(0)
        cfg = _config(**{"kl.weight": 1.0, "kl.entropy_weight": 0.0, "buffer.size": 32,
                         "kl.entropy_reference": size})
        state = TrainState.create(MLPEnergy(2, hidden=4, depth=1).to(DT), cfg)
        train_step(state, _data()[:4])
        gens.append(state.generator.get_state())
    assert torch.equal(gens[0], gens[1])


def test_an_ensembles_kl_loss_is_split_by_member(monkeypatch):
    """A 2-member ensemble with the entropy term: the KL loss gets groups = 2 (each member's
    chains and reference block on their own) and is what train_step reports."""
    from ebmref import training as T
    from ebmref.ensemble import EnsembleEnergy

    original, seen = T.kl_loss, {}

    def spy(*args, **kwargs):
        seen["groups"], seen["value"] = kwargs["groups"], original(*args, **kwargs)
        return seen["value"]

    monkeypatch.setattr(T, "kl_loss", spy)
    torch.manual_seed(0)
    members = [MLPEnergy(2, hidden=4, depth=1) for _ in range(2)]
    cfg = _config(**{"kl.weight": 1.0, "kl.entropy_weight": 0.1, "buffer.size": 16,
                     "kl.entropy_reference": 4})
    state = TrainState.create(EnsembleEnergy(members).to(DT), cfg)
    state.ensure_buffer((2,)).sample(8, state.generator)  # a filled buffer to draw from
    stats = train_step(state, _data()[:8]).stats
    assert seen["groups"] == 2 and stats["loss_kl"] == float(seen["value"].detach())
