"""Tests of the replay buffer (ebmref/buffer.py): fill policies, re-initialisation rates
(calibrated binomial tests), FIFO order, reservoir uniformity, persistence, bad input."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from ebmref.buffer import ReplayBuffer, UniformNoise
from verification.stats import ALPHA, assert_pvalues

SENTINEL = 10.0  # outside the noise box [0, 1] and the data range: marks untouched entries


def _binom_p(k: int, n: int, p: float) -> float:
    return float(stats.binomtest(k, n, p).pvalue)


def _binom_power(n: int, p0: float, p1: float, alpha: float) -> float:
    """Power of the two-sided exact binomial test of p0 when the truth is p1 (normal approx.
    of the acceptance region, exact binomial tail for the rejection probability)."""
    lo = stats.binom.ppf(alpha / 2, n, p0)
    hi = stats.binom.isf(alpha / 2, n, p0)
    return float(stats.binom.cdf(lo - 1, n, p1) + stats.binom.sf(hi, n, p1))


def test_noise_fill_and_box():
    g = torch.Generator().manual_seed(1)
    buf = ReplayBuffer(50, "noise", noise_fn=UniformNoise((3,), -2.0, 5.0, torch.float64))
    x, idx = buf.sample(20, g)
    assert x.shape == (20, 3) and idx.shape == (20,) and len(buf) == 50
    assert buf.storage.dtype == torch.float64
    assert (buf.storage >= -2).all() and (buf.storage < 5).all()


def test_data_policies_fill_from_data_and_pcd_never_reinitialises(rng):
    data = torch.rand(30, 2, generator=rng, dtype=torch.float64)  # floats in [0, 1), not uint8
    buf = ReplayBuffer(40, "data", reinit_prob=1.0, data_fraction=1.0)
    buf.sample(5, rng, data=data)
    rows = {tuple(r.tolist()) for r in data}
    assert all(tuple(r.tolist()) in rows for r in buf.storage)  # exact values kept
    buf.storage.fill_(SENTINEL)
    for _ in range(20):
        x, _idx = buf.sample(10, rng, data=data)
        assert (x == SENTINEL).all()  # PCD: starts are always stored chain ends


@pytest.mark.stochastic
@pytest.mark.parametrize("init,prob", [("noise", 0.05), ("true_cd", 0.1)])
def test_reinitialisation_rate_is_binomial(rng, init, prob):
    """Each read start is replaced (by noise / a data point) independently with probability
    p: the count over n starts is Binomial(n, p). α = 1e-6 (one p-value); the test asserts it
    detects a rate off by 25 % (p·1.25) with probability ≥ 1 − 1e-3, and the same assertion
    fails for a buffer whose rate really is 1.5 p (broken variant)."""
    n_reads, batch = 400, 100
    n = n_reads * batch
    assert _binom_power(n, prob, 1.25 * prob, ALPHA) >= 1 - 1e-3
    assert _binom_power(n, prob, 0.75 * prob, ALPHA) >= 1 - 1e-3

    def count(true_prob):
        kw = {"reinit_prob": true_prob} if init == "noise" else {"data_fraction": true_prob}
        buf = ReplayBuffer(500, init, noise_fn=UniformNoise((2,)), **kw)
        data = torch.rand(100, 2, generator=rng)
        buf.sample(1, rng, data=data)
        buf.storage.fill_(SENTINEL)
        replaced = 0
        for _ in range(n_reads):
            x, _ = buf.sample(batch, rng, data=data)
            replaced += int((x[:, 0] != SENTINEL).sum())
        return replaced

    k = count(prob)
    assert_pvalues({"binomial": _binom_p(k, n, prob)}, ALPHA)
    with pytest.raises(AssertionError):
        assert_pvalues({"binomial": _binom_p(count(1.5 * prob), n, prob)}, ALPHA)


def test_fifo_overwrites_oldest_in_order():
    buf = ReplayBuffer(5, "noise", noise_fn=UniformNoise((1,)), replacement="fifo")
    buf.sample(1, torch.Generator().manual_seed(0))
    for start in (0, 3, 6):
        buf.push(torch.arange(start, start + 3, dtype=torch.float32)[:, None])
    # pushes 0..8 into 5 slots: slots hold [5, 6, 7, 8, 4]
    assert buf.storage[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0, 4.0]
    assert buf.ptr == 4 and buf.n_seen == 5 + 9


@pytest.mark.stochastic
def test_reservoir_keeps_a_uniform_sample_of_history(rng):
    """After C initial entries and N pushed labels, every one of the C + N items is in the
    buffer with probability C/(C + N) (reservoir sampling). Per-label binomial tests over R
    independent replicates, Bonferroni over the N labels, α = 1e-6 in total. Power: the test
    must see a label kept with probability 0 or 2·C/(C+N); the FIFO policy (broken variant:
    keeps only the last C labels) fails the same assertion."""
    cap, n_labels, batch, reps = 8, 24, 4, 300
    p_in = cap / (cap + n_labels)
    alpha_per = ALPHA / n_labels
    assert _binom_power(reps, p_in, 0.0, alpha_per) >= 1 - 1e-3
    assert _binom_power(reps, p_in, 2 * p_in, alpha_per) >= 1 - 1e-3
    gen = rng

    def inclusion_counts(replacement):
        counts = torch.zeros(n_labels)
        for _ in range(reps):
            buf = ReplayBuffer(cap, "noise", noise_fn=UniformNoise((1,), -2.0, -1.0),
                               replacement=replacement)
            buf.sample(1, gen)
            for s in range(0, n_labels, batch):
                buf.push(torch.arange(s, s + batch, dtype=torch.float32)[:, None], gen)
            kept = buf.storage[:, 0]
            kept = kept[kept >= 0].long()
            assert kept.unique().numel() == kept.numel()  # no label twice
            counts[kept] += 1
        return counts

    counts = inclusion_counts("reservoir")
    assert_pvalues({f"label{i}": _binom_p(int(c), reps, p_in) for i, c in enumerate(counts)})
    fifo = inclusion_counts("fifo")
    with pytest.raises(AssertionError):
        assert_pvalues({f"label{i}": _binom_p(int(c), reps, p_in) for i, c in enumerate(fifo)})


def test_reproducible_and_state_dict_roundtrip():
    def run(buf, gen):
        out = []
        for _ in range(5):
            x, _ = buf.sample(6, gen)
            buf.push(x + 1.0)
            out.append(x)
        return torch.cat(out)

    make = lambda: ReplayBuffer(16, "noise", noise_fn=UniformNoise((2,)),
                                replacement="reservoir", reinit_prob=0.3)
    a, b = make(), make()
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(run(a, ga), run(b, gb))
    c = make()
    c.load_state_dict(a.state_dict())
    gc = torch.Generator().manual_seed(0)
    gc.set_state(ga.get_state())
    assert torch.equal(run(a, ga), run(c, gc))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(17, "noise", noise_fn=UniformNoise((2,))).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="init"):
        ReplayBuffer(16, "data", replacement="reservoir").load_state_dict(a.state_dict())


def test_peek_draws_stored_states_without_policy():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(10, "noise", reinit_prob=1.0, noise_fn=UniformNoise((2,)))
    buf.sample(2, g)
    buf.storage.fill_(SENTINEL)
    assert (buf.peek(7, g) == SENTINEL).all()


@pytest.mark.parametrize("kwargs,field", [
    ({"capacity": 0}, "capacity"), ({"capacity": 4, "init": "fresh"}, "init"),
    ({"capacity": 4, "reinit_prob": 1.2}, "reinit_prob"),
    ({"capacity": 4, "data_fraction": -0.5}, "data_fraction"),
    ({"capacity": 4, "replacement": "lru"}, "replacement"),
    ({"capacity": 4, "init": "noise"}, "noise_fn"),
])
def test_bad_constructor_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ReplayBuffer(**kwargs)


def test_bad_calls():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(4, "noise", noise_fn=UniformNoise((2,)))
    with pytest.raises(ValueError, match="push"):
        buf.push(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="peek"):
        buf.peek(2, g)
    buf.sample(2, g)
    with pytest.raises(ValueError, match="x"):
        buf.push(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x.shape"):
        buf.push(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="batch"):
        buf.sample(0, g)
    with pytest.raises(ValueError, match="data"):
        ReplayBuffer(4, "data").sample(2, g)
    tcd = ReplayBuffer(4, "true_cd")
    tcd.sample(2, g, data=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="data"):
        tcd.sample(2, g)
    with pytest.raises(ValueError, match="low"):
        UniformNoise((2,), 1.0, 1.0)
    u = UniformNoise((1,), 2.0, 3.0)(1000, g)
    assert u.shape == (1000, 1) and (u >= 2.0).all() and (u < 3.0).all()
